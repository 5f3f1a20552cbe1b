"""The servers a soak runs against, chosen by its fault kinds.

* ``single``: one throwaway fsync-on cluster behind the test proxy
  (``TCPProxy``): the kinds of ``chaos.faults``;
* ``ha``: a primary and a streaming standby, each in a network namespace
  of its own (``chaos.ha``): the kinds of ``chaos.hafaults``;
* ``bouncer``: a primary behind PgBouncer in transaction pooling mode
  (``chaos.bouncer``).
"""

from __future__ import annotations

import os
import shutil
from typing import Any, Dict, Optional, Tuple

import psycopg2
from zope.interface import implementer

from chaos.faults import KINDS, FaultInjector
from chaos.interfaces import IFaultInjector, ITopology
from canonical.testing.cluster import Cluster
from canonical.testing.cluster.conf import PASSWORD_ROLE
from canonical.testing.cluster.conf import PASSWORD_ROLE_PASSWORD
from canonical.testing.tcpproxy import TCPProxy
from canonical.database.outcomes import CREATE_SQL

__all__ = ['DBNAME', 'MAX_CONNECTIONS', 'ServersTopology', 'SingleTopology', 'TOPOLOGY_KINDS',
           'topology_for', 'make_topology', 'create_database', 'connect',
           'seeded_servers']

DBNAME = 'chaos'
MAX_CONNECTIONS = 40

# Kept here, not imported from the modules of the other topologies, so that
# choosing a topology needs neither network namespaces nor PgBouncer.
TOPOLOGY_KINDS: Dict[str, Tuple[str, ...]] = {
    'single': KINDS,
    'ha': ('failover_sync', 'failover_async', 'switchover',
           'fence_in_place', 'silent_partition'),
    'bouncer': ('pgbouncer_pause', 'pgbouncer_restart',
                'restart_behind_pgbouncer'),
}


def topology_for(kinds: Tuple[str, ...]) -> str:
    """The one topology taking all ``kinds`` ('single' for none)."""
    names = {name for name, known in TOPOLOGY_KINDS.items()
             for kind in kinds if kind in known}
    unknown = set(kinds) - {k for known in TOPOLOGY_KINDS.values()
                            for k in known}
    if unknown:
        raise ValueError('unknown fault kinds: %s' % ', '.join(
            sorted(unknown)))
    if len(names) > 1:
        raise ValueError('fault kinds of different topologies (%s): run '
                         'one soak per topology' % ', '.join(sorted(names)))
    return names.pop() if names else 'single'


def make_topology(name: str, base: str) -> ITopology:
    if name == 'single':
        return SingleTopology(base)
    if name == 'ha':
        from chaos.ha import HATopology
        return HATopology(base)
    if name == 'bouncer':
        from chaos.bouncer import BouncerTopology
        return BouncerTopology(base)
    raise ValueError('unknown topology %r (single, ha or bouncer)' % name)


def connect(rundir: str, port: int, user: str, dbname: str = 'postgres',
            autocommit: bool = True, **kw: Any) -> Any:
    """A psycopg2 connection over a server's unix socket, which neither
    the proxy, PgBouncer nor a cut network namespace stands in front of."""
    kw.setdefault('application_name', 'chaos-admin')
    conn = psycopg2.connect(host=rundir, port=port, user=user,
                            dbname=dbname, **kw)
    conn.autocommit = autocommit
    return conn


def create_database(admin: Any, app: Any, schema: str,
                    accounts: int, opening: int) -> None:
    """The soak's database, its schema and accounts, for the workers'
    password-protected role."""
    conn = admin()
    try:
        conn.cursor().execute('DROP DATABASE IF EXISTS %s' % DBNAME)
        conn.cursor().execute('CREATE DATABASE %s OWNER launchpad' % DBNAME)
    finally:
        conn.close()
    conn = app()
    try:
        cur = conn.cursor()
        cur.execute(schema)
        # The workers' role may not create tables: the commit outcome
        # table is made by its owner, as README asks of operators, or
        # outcomes lost in a failover could not be told.
        cur.execute(CREATE_SQL)
        cur.execute('INSERT INTO chaos_account (id, balance, opening) '
                    'SELECT g, %s, %s FROM generate_series(1, %s) g',
                    (opening, opening, accounts))
        cur.execute('GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES '
                    'IN SCHEMA public TO %s; GRANT USAGE ON ALL '
                    'SEQUENCES IN SCHEMA public TO %s'
                    % (PASSWORD_ROLE, PASSWORD_ROLE))
        conn.commit()
    finally:
        conn.close()


def seeded_servers(base: str, schema: str, accounts: int,
                   opening: int) -> Any:
    """A test kit ``Servers`` whose seed (stopped) holds the soak's
    database: its primaries are copies of the seed, much faster than
    loading each again.  ``close()`` deletes the seed too."""
    from canonical.testing.cluster.replication import ReplicationNode
    from canonical.testing.servers import Servers
    servers = Servers(seed=None)
    seed = ReplicationNode(os.path.join(base, 'seed'), name='seed')
    servers.nodes.append(seed)
    servers.seed = seed
    try:
        seed.initialise()
        seed.start()
        create_database(
            lambda: connect(seed.rundir, seed.port, seed.superuser),
            lambda: connect(seed.rundir, seed.port, 'launchpad', DBNAME,
                            autocommit=False),
            schema, accounts, opening)
        seed.stop('fast')
    except BaseException:
        servers.close()
        raise
    return servers


class ServersTopology:
    """What the topologies made of the test kit's ``Servers`` share:
    servers reached over their unix sockets, and their removal.  A
    subclass says in ``stop_kept()`` how its servers stop when kept."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.servers: Any = None
        self.primary: Any = None

    def connect_to(self, node: Any, dbname: str = 'postgres',
                   **kw: Any) -> Any:
        return connect(node.rundir, node.port, node.superuser, dbname, **kw)

    def admin(self, dbname: str = 'postgres', **kw: Any) -> Any:
        return self.connect_to(self.primary, dbname, **kw)

    def app(self) -> Any:
        return connect(self.primary.rundir, self.primary.port, 'launchpad',
                       DBNAME, autocommit=False,
                       application_name='chaos-setup')

    def release(self) -> None:
        pass

    def close(self, keep: bool) -> None:
        if self.servers is None:
            return
        if keep:
            self.stop_kept()
        else:
            self.servers.close()
            shutil.rmtree(self.base, ignore_errors=True)

    def stop_kept(self) -> None:
        raise NotImplementedError


@implementer(ITopology)
class SingleTopology:
    """One throwaway cluster behind the test proxy."""

    name = 'single'
    kinds = KINDS
    dbuser = PASSWORD_ROLE
    password = PASSWORD_ROLE_PASSWORD

    def __init__(self, base: str) -> None:
        self.base = base
        self.cluster: Optional[Cluster] = None
        self.proxy: Optional[TCPProxy] = None

    def start(self, schema: str, accounts: int, opening: int) -> None:
        cluster = Cluster(self.base, fsync=True)
        cluster.initialise()
        conf = os.path.join(cluster.datadir, 'postgresql.conf')
        with open(conf) as f:
            text = f.read()
        marker = '# chaos soak\n'
        if marker not in text:
            # Few slots, so "too many connections" is cheap to provoke.
            with open(conf, 'a') as f:
                f.write('%smax_connections = %d\n' % (marker,
                                                      MAX_CONNECTIONS))
        self.cluster = cluster.start()
        create_database(self.admin, self.app, schema, accounts, opening)
        self.proxy = TCPProxy('127.0.0.1', cluster.port)

    @property
    def dbhost(self) -> str:
        return '' if self.proxy is None else \
            '127.0.0.1 port=%d' % self.proxy.port

    def admin(self, dbname: str = 'postgres', **kw: Any) -> Any:
        return connect(self.cluster.rundir, self.cluster.port,
                       self.cluster.superuser, dbname, **kw)

    def app(self) -> Any:
        return psycopg2.connect(host='127.0.0.1', port=self.cluster.port,
                                user='launchpad', dbname=DBNAME,
                                application_name='chaos-setup')

    def injector(self, seed: Any, kinds: tuple, interval: float,
                 rounds: Optional[int] = None) -> IFaultInjector:
        return FaultInjector(seed, self.cluster, self.proxy, self.admin,
                             DBNAME, kinds=kinds, interval=interval,
                             rounds=rounds)

    def leftovers(self, baseline: int, wait: float = 10.0) -> Dict[str, Any]:
        from chaos.audit import leftovers
        return leftovers(self.admin, DBNAME, baseline, wait=wait)

    def release(self) -> None:
        if self.proxy is not None:
            self.proxy.close()

    def close(self, keep: bool) -> None:
        self.release()
        if self.cluster is None:
            return
        if keep:
            try:
                self.cluster.stop('fast')
            except Exception:  # noqa: BLE001 - best effort
                pass
        else:
            self.cluster.destroy()
            shutil.rmtree(self.base, ignore_errors=True)
