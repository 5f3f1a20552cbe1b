"""A private PostgreSQL cluster for demos, development and tests.

The cluster is built from the PostgreSQL server binaries installed on the
machine (found through ``pg_config --bindir``, ``PATH`` or
``/usr/lib/postgresql/*/bin``).  Its data directory, unix socket and log live
under the project's ``var/`` directory; it listens on 127.0.0.1 only, on a
free port that is recorded in ``var/cluster.json``.

Run it from the command line::

    bin/python -m canonical.testing.cluster start|stop|status|env

or from Python::

    from canonical.testing.cluster import ensure_cluster
    cluster = ensure_cluster()
    print(cluster.host, cluster.port, cluster.superuser)

When the caller is root the server runs as an unprivileged user (``postgres``
if it exists, otherwise a system user ``zopeless-pg`` created on demand).
When that user cannot reach the project directory, the cluster files are
kept under ``/var/tmp/zopeless-<hash>/`` instead and ``var/cluster.json``
records where.

When ``PGHOST`` or ``PGPORT`` name a server other than this cluster,
``ensure_cluster()`` describes that server instead of starting one.

The package uses the standard library only, so it also runs with a plain
interpreter, before the project's dependencies are installed:
``PYTHONPATH=src python3 -m canonical.testing.cluster --base DIR start``.

For failover tests, ``ReplicationNode`` (a ``Cluster`` that streams to
standbys or is one: ``make_standby()``, ``promote()``, ``fence()``,
``follow()``), ``PgBouncer`` (the operating system's, in transaction
pooling mode, in front of a node) and ``NetworkHost`` (a network namespace,
so that a server can vanish from the network silently) build the
topologies users run in production, on this machine.

Modules: ``interfaces`` (contracts and exceptions), ``binaries`` (finding
the server), ``layout`` (files, state, server user, ports), ``conf``
(configuration files), ``settings`` (a node's own settings), ``process``
(process helpers), ``server`` (``Cluster``), ``replication``
(``ReplicationNode``), ``pgbouncer`` (``PgBouncer``), ``netns``
(``NetworkHost``), ``external`` (``ExternalServer``, ``ensure_cluster``),
``cli`` (``main``).
"""

from .binaries import find_bindir
from .cli import main
from .external import ExternalServer, ensure_cluster
from .interfaces import BinariesNotFound, ClusterError, ExternalServerError
from .interfaces import NetworkHostError, PgBouncerError, ReplicationError
from .layout import default_base
from .netns import NetworkHost
from .pgbouncer import PgBouncer
from .replication import ReplicationNode
from .server import Cluster

__all__ = [
    'ClusterError', 'BinariesNotFound', 'ExternalServerError',
    'ReplicationError', 'NetworkHostError', 'PgBouncerError',
    'Cluster', 'ReplicationNode', 'PgBouncer', 'NetworkHost',
    'ExternalServer', 'ensure_cluster', 'find_bindir', 'default_base',
    'main',
]
