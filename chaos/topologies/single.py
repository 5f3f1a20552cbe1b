"""The "single" topology: one throwaway fsync-on cluster behind the test
proxy (``TCPProxy``), taking the fault kinds of ``chaos.faults``."""

from __future__ import annotations

import os
import shutil
from typing import Any, Dict, Optional

import psycopg2
from zope.interface import implementer

from chaos.base import DBNAME, MAX_CONNECTIONS, connect, create_database
from chaos.faults import KINDS, FaultInjector
from chaos.interfaces import IFaultInjector, ITopology
from chaos.topology import register
from canonical.testing.cluster import Cluster
from canonical.testing.cluster.conf import PASSWORD_ROLE
from canonical.testing.cluster.conf import PASSWORD_ROLE_PASSWORD
from canonical.testing.tcpproxy import TCPProxy

__all__ = ['SingleTopology']


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


# The default: the topology of a soak given no fault kinds.
register('single', KINDS, SingleTopology, order=0,
         about='one cluster behind the test proxy')
