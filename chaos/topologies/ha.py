"""The "ha" topology: a primary and a streaming standby, each in a network
namespace of its own, which the library lists as users write it
(``dbhost='a1,a2 port=p1,p2'``).

The workers reach each node over its namespace's veth pair, so a node can
be cut off from them silently; the nodes stream to each other over unix
sockets, which a namespace does not cut (``ReplicationNode`` does so
whenever the two run in different namespaces), and the soak reads any
node over its unix socket whatever its network does.  Nodes keep their
address and port for the whole soak: the faults swap roles, never places.

The servers come from the test kit (``canonical.testing.servers``):
a seed node holding the soak's database is copied into the first primary;
the standby is its base backup.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from zope.interface import implementer

from chaos.base import DBNAME, ServersTopology, seeded_servers
from chaos.hafaults import HAFaultInjector
from chaos.interfaces import IFaultInjector, ITopology
from chaos.topology import register
from canonical.testing.cluster.conf import PASSWORD_ROLE
from canonical.testing.cluster.conf import PASSWORD_ROLE_PASSWORD
from canonical.testing.cluster.interfaces import INetworkHost
from canonical.testing.cluster.interfaces import IReplicationNode

__all__ = ['HATopology']


@implementer(ITopology)
class HATopology(ServersTopology):
    """See the module docstring; ``primary`` and ``standby`` follow the
    roles as faults swap them."""

    name = 'ha'
    kinds = HAFaultInjector.KINDS
    dbuser = PASSWORD_ROLE
    password = PASSWORD_ROLE_PASSWORD

    def __init__(self, base: str) -> None:
        super().__init__(base)
        self.standby: Optional[IReplicationNode] = None
        self.hosts: Dict[str, INetworkHost] = {}
        self.dbhost = ''

    def start(self, schema: str, accounts: int, opening: int) -> None:
        self.servers = seeded_servers(self.base, schema, accounts, opening)
        first, second = self.servers.host(), self.servers.host()
        self.primary = self.servers.primary('n1', netns=first)
        self.standby = self.servers.standby(self.primary, 'n2',
                                            netns=second)
        self.hosts = {'n1': first, 'n2': second}
        nodes = (self.primary, self.standby)
        self.dbhost = '%s port=%s' % (
            ','.join(n.host for n in nodes),
            ','.join(str(n.port) for n in nodes))

    def host_of(self, node: IReplicationNode) -> INetworkHost:
        return self.hosts[node.name]

    def swap(self) -> None:
        """The standby was promoted: it is the primary now."""
        self.primary, self.standby = self.standby, self.primary

    def injector(self, seed: Any, kinds: tuple, interval: float,
                 rounds: Optional[int] = None) -> IFaultInjector:
        return HAFaultInjector(seed, self, kinds=kinds, interval=interval,
                               rounds=rounds)

    def leftovers(self, baseline: int, wait: float = 10.0) -> Dict[str, Any]:
        from chaos.audit import leftovers
        found = leftovers(self.admin, DBNAME, baseline, wait=wait)
        # A writer may never keep a session on the standby either.
        on_standby = leftovers(lambda: self.connect_to(self.standby), DBNAME,
                               0, wait=wait)
        found['standby_backends'] = on_standby['backends']
        found['leaked_backends'] += on_standby['leaked_backends']
        return found

    def stop_kept(self) -> None:
        # The files stay; the namespaces go, as they must.
        for node in self.servers.nodes:
            try:
                node.stop('fast')
            except Exception:  # noqa: BLE001 - best effort
                pass
        for host in self.servers.hosts:
            host.remove()


register('ha', HATopology.kinds, HATopology, order=10,
         about='a primary and a standby in network namespaces of their '
               'own (root)')
