"""A server named by PGHOST/PGPORT, and the choice between it and ours."""

import getpass
import os
import socket
from typing import Optional, Union

from .binaries import find_bindir
from .interfaces import ClusterError, ExternalServerError, IServer
from .interfaces import implementer
from .layout import HOST, ServerAddress
from .server import Cluster

__all__ = ['ExternalServer', 'external_from_env', 'ensure_cluster']


@implementer(IServer)
class ExternalServer(ServerAddress):
    """An existing PostgreSQL server named by PGHOST/PGPORT."""

    external = True
    datadir = None

    def __init__(self, host: Optional[str] = None,
                 port: Union[int, str, None] = None,
                 superuser: Optional[str] = None):
        self.host = host or os.environ.get('PGHOST') or 'localhost'
        self.port = int(port or os.environ.get('PGPORT') or 5432)
        # libpq's own default when PGUSER is unset.
        self.superuser = (superuser or os.environ.get('PGUSER')
                          or getpass.getuser())

    def __repr__(self):
        return '<ExternalServer %s:%s>' % (self.host, self.port)

    @property
    def bindir(self) -> Optional[str]:
        # Only the client programs are wanted, so their absence is no error.
        try:
            return find_bindir()
        except ClusterError:
            return None

    def is_running(self) -> bool:
        if self.host.startswith('/'):
            family = socket.AF_UNIX
            address = os.path.join(self.host, '.s.PGSQL.%d' % self.port)
        else:
            family, address = socket.AF_INET, (self.host, self.port)
            if ':' in self.host:
                family = socket.AF_INET6
        s = socket.socket(family, socket.SOCK_STREAM)
        s.settimeout(3)
        try:
            s.connect(address)
        except OSError:
            return False
        finally:
            s.close()
        return True

    def _unsupported(self, *args, **kw):
        # Someone else's server: stopping or wiping it must never happen.
        raise ExternalServerError(
            'PGHOST/PGPORT name an existing server (%s:%s), which this '
            'module does not control; unset them to use the private cluster'
            % (self.host, self.port))

    start = stop = restart = pg_ctl = kill = destroy = _unsupported

    def status(self) -> dict:
        return dict(external=True, running=self.is_running(),
                    host=self.host, port=self.port, superuser=self.superuser)


def external_from_env(cluster: Cluster) -> Optional[ExternalServer]:
    """An ExternalServer when PG* names a server other than cluster."""
    host = os.environ.get('PGHOST')
    port = os.environ.get('PGPORT')
    if not host and not port:
        return None
    # PG* left pointing at our own cluster (e.g. by ``env``) is not foreign.
    ours_host = host in (None, '', HOST, 'localhost', cluster.rundir)
    ours_port = cluster.port is not None and str(port or 5432) == str(
        cluster.port)
    if ours_host and ours_port:
        return None
    return ExternalServer(host, port)


def ensure_cluster(base: Optional[str] = None, fsync: Optional[bool] = None
                   ) -> Union[Cluster, ExternalServer]:
    """The database server to use, started if it is the private cluster."""
    cluster = Cluster(base, fsync=fsync)
    # An explicit base asks for the private cluster whatever PG* says.
    external = external_from_env(cluster) if base is None else None
    if external is not None:
        return external
    return cluster.start()
