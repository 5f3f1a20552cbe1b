"""The "patroni" topology: a Patroni cluster as users run one (the test
kit's ``PatroniCluster``: etcd, three members in network namespaces of
their own, synchronous_mode on, HAProxy unused here), the workers listing
every member in dbhost, and Patroni's own faults (``FAULTS`` of
canonical.testing.patroni, each kind named ``patroni_<fault>``): switchover, postmaster kill, restart, hung
leader, silent cut, etcd stopped.

Each fault's detail says when it began (``gone_at``), the leader after it
(``new_primary``, so the report gives the time to the first commit there)
and when Patroni's REST API first showed a leader (``patroni_after``):
what the library adds to Patroni's own detection is the difference.
"""

from __future__ import annotations

import os
import shutil
from typing import Any, Dict, Optional

from zope.interface import implementer

from chaos.base import DBNAME, ServersTopology, connect, create_database
from chaos.faults import Injector
from chaos.interfaces import IFaultInjector, ITopology
from chaos.topology import register
from canonical.testing.cluster.conf import PASSWORD_ROLE
from canonical.testing.cluster.conf import PASSWORD_ROLE_PASSWORD

__all__ = ['PatroniTopology', 'PatroniFaultInjector', 'KINDS']

# The soak's kind names are unique across topologies: 'patroni_' and the
# name of the fault in canonical.testing.patroni.FAULTS.
FAULT_NAMES = ('switchover', 'postmaster_kill', 'restart', 'hung_leader',
               'silent_cut', 'etcd_stopped')
KINDS = tuple('patroni_' + name for name in FAULT_NAMES)


@implementer(ITopology)
class PatroniTopology(ServersTopology):
    """See the module docstring."""

    name = 'patroni'
    kinds = KINDS
    dbuser = PASSWORD_ROLE
    password = PASSWORD_ROLE_PASSWORD

    def __init__(self, base: str) -> None:
        super().__init__(base)
        self.cluster: Any = None
        self.dbhost = ''

    def start(self, schema: str, accounts: int, opening: int) -> None:
        from canonical.testing.cluster.patroni import PatroniCluster
        os.makedirs(self.base, exist_ok=True)
        self.cluster = PatroniCluster(synchronous=True).start()
        conn = self.admin()
        try:
            conn.cursor().execute('CREATE ROLE %s LOGIN PASSWORD %%s'
                                  % PASSWORD_ROLE, (PASSWORD_ROLE_PASSWORD,))
        finally:
            conn.close()
        create_database(self.admin, self.app, schema, accounts, opening)
        members = self.cluster.members
        self.dbhost = '%s port=%s' % (
            ','.join(m.host for m in members),
            ','.join(str(m.port) for m in members))

    @property
    def primary(self) -> Any:
        return None if self.cluster is None else self.cluster.wait_leader()

    @primary.setter
    def primary(self, value: Any) -> None:
        pass  # Patroni decides

    def connect_to(self, member: Any, dbname: str = 'postgres',
                   **kw: Any) -> Any:
        return connect(member.directory, member.port, member.superuser,
                       dbname, **kw)

    def app(self) -> Any:
        leader = self.primary
        return connect(leader.directory, leader.port, 'launchpad', DBNAME,
                       autocommit=False, application_name='chaos-setup')

    def injector(self, seed: Any, kinds: tuple, interval: float,
                 rounds: Optional[int] = None) -> IFaultInjector:
        return PatroniFaultInjector(seed, self, kinds=kinds,
                                    interval=interval, rounds=rounds)

    def leftovers(self, baseline: int, wait: float = 10.0) -> Dict[str, Any]:
        from chaos.audit import leftovers
        return leftovers(self.admin, DBNAME, baseline, wait=wait)

    def close(self, keep: bool) -> None:
        # The namespaces and processes go in any case; --keep keeps the
        # logs (etcd's, HAProxy's, each member's Patroni and PostgreSQL).
        if self.cluster is not None and keep:
            directory = self.cluster.directory
            for root, _, files in os.walk(directory):
                for name in files:
                    if name.endswith('.log'):
                        target = os.path.join(self.base, 'logs', os.path.relpath(
                            root, directory), name)
                        os.makedirs(os.path.dirname(target), exist_ok=True)
                        shutil.copy(os.path.join(root, name), target)
            self.cluster.destroy()
            self.cluster = None
            return
        if self.cluster is not None:
            self.cluster.destroy()
            self.cluster = None
        shutil.rmtree(self.base, ignore_errors=True)


class PatroniFaultInjector(Injector):
    """See the module docstring."""

    KINDS = KINDS

    def __init__(self, seed: Any, topology: PatroniTopology,
                 kinds: Optional[tuple] = None, interval: float = 1.5,
                 warmup: float = 0.5, rounds: Optional[int] = None) -> None:
        super().__init__(seed, kinds, interval, warmup, rounds)
        self.topology = topology

    def __getattr__(self, name: str) -> Any:
        # run() calls _<kind>(a, b): every kind is one inflict().
        if name.startswith('_') and name[1:] in KINDS:
            return lambda a, b: self._inflict(name[len('_patroni_'):])
        raise AttributeError(name)

    def _inflict(self, kind: str) -> dict:
        from canonical.testing.patroni import heal, inflict
        cluster = self.topology.cluster
        report = inflict(cluster, kind)
        # The next fault meets a cluster with a synchronous standby again
        # (a member that does not rejoin by itself is made again).
        healed = heal(cluster)
        new = cluster.member(report.new)
        return {'gone_at': report.began, 'old': report.old,
                'new': report.new,
                'new_primary': '%s:%s' % (new.host, new.port),
                'patroni_after': round(report.patroni_seconds, 3),
                'healed': healed}

    def _restore(self) -> None:
        cluster = self.topology.cluster
        if cluster is None:
            return
        for member in cluster.members:
            if member.netns.is_cut:
                member.netns.restore()
            cluster.resume(member.pids())
        if not cluster.etcd.is_running():
            cluster.etcd.start()


register('patroni', KINDS, PatroniTopology, order=40,
         about='Patroni (etcd, three members in network namespaces of '
               'their own; root)')
