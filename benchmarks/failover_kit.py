"""The failover section's servers and writers.

``ServerPair`` is a primary and a streaming standby made with the test
kit (``canonical.testing.servers.Servers``), each in a network
namespace of its own when the machine allows (root, iproute2), so that a
primary can vanish silently.  At each failover the roles swap; the old
primary then comes back as the standby of the new one (``follow()``:
pg_rewind), so one pair serves every round.

``Writer`` runs units through one client of a system in a thread of its
own and records when each commit returned and which server took it
(``host:port`` as the server itself reports them).
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from typing import Callable, Dict, List, Optional, Tuple

from zope.interface import implementer

from benchmarks.interfaces import IFailoverClient, IFailoverSystem
from benchmarks.interfaces import IServerPair
from canonical.testing.cluster.interfaces import INetworkHost
from canonical.testing.cluster.interfaces import IReplicationNode
from canonical.testing.cluster.interfaces import NetworkHostError

__all__ = ['ServerPair', 'Writer', 'label']

_writers = itertools.count(1)


def label(node: IReplicationNode) -> str:
    """How a server names itself in a unit's result (see INSERT_SQL)."""
    return '%s:%s' % (node.host, node.port)


@implementer(IServerPair)
class ServerPair:
    """See IServerPair.  After promote(), ``standby`` is the old primary
    (down or cut off) until rejoin()."""

    def __init__(self, servers, netns: bool = True) -> None:
        hosts: List[Optional[INetworkHost]] = [None, None]
        if netns:
            try:
                hosts = [servers.host(), servers.host()]
            except NetworkHostError:
                hosts = [None, None]
        self.silent_possible = hosts[0] is not None
        self.primary = servers.primary('fa', netns=hosts[0])
        self.standby = servers.standby(self.primary, 'fb', netns=hosts[1])
        self._nodes = (self.primary, self.standby)
        self._netns = {'fa': hosts[0], 'fb': hosts[1]}
        self._synchronous = False

    def hosts(self) -> List[Tuple[str, int]]:
        return [(n.host, n.port) for n in self._nodes]

    def set_synchronous(self, synchronous: bool) -> None:
        self._synchronous = synchronous
        self.primary.set_synchronous([self.standby.name] if synchronous
                                     else [])

    def crash(self) -> None:
        self.primary.stop('immediate')

    def cut(self) -> None:
        self._netns[self.primary.name].cut(silent=True)

    def promote(self) -> None:
        self.standby.promote()
        self.primary, self.standby = self.standby, self.primary

    def rejoin(self) -> None:
        old = self.standby
        host = self._netns[old.name]
        if host is not None and host.is_cut:
            if old.is_running():
                old.stop('immediate')
            host.restore()
            # Connections to the vanished server still wait for answers
            # that will never come (libpq's default timeouts wait for the
            # kernel's, many minutes): a loud cut resets them at once.
            host.cut(silent=False)
            host.restore()
        old.follow(self.primary)
        if self._synchronous:
            self.primary.set_synchronous([old.name])


class Writer(threading.Thread):
    """Runs units through ``system.client()`` until stop(); see the module
    docstring.  A unit whose attempt fails with one of the client's
    retry_errors is run again after the client's recover(); any other
    error ends the writer (``fatal``)."""

    def __init__(self, system: IFailoverSystem, pause: float = 0.0) -> None:
        super().__init__(name='failover-writer-%d' % next(_writers),
                         daemon=True)
        self.system = system
        self.pause = pause
        self.commits: List[Tuple[float, str]] = []   # (monotonic, server)
        self.failed_attempts = 0
        self.failure_kinds: Dict[str, int] = {}   # exception class: count
        self.fatal: Optional[BaseException] = None
        self._stopping = threading.Event()
        self._cond = threading.Condition()

    def run(self) -> None:
        client: Optional[IFailoverClient] = None
        try:
            client = self.system.client()
            self._loop(client)
        except BaseException as e:
            self.fatal = e
        finally:
            with self._cond:
                self._cond.notify_all()
            if client is not None:
                with contextlib.suppress(Exception):
                    client.close()

    def _loop(self, client: IFailoverClient) -> None:
        for n in itertools.count(1):
            if self._stopping.is_set():
                return
            try:
                server = client.write('%s-%d' % (self.name, n))
            except client.retry_errors as e:
                self.failed_attempts += 1
                kind = type(e).__name__
                self.failure_kinds[kind] = self.failure_kinds.get(kind, 0) + 1
                client.recover(e)
                continue
            with self._cond:
                self.commits.append((time.monotonic(), server))
                self._cond.notify_all()
            if self.pause:
                self._stopping.wait(self.pause)

    def commits_on(self, server: str, since: float) -> List[float]:
        """When each unit ``server`` took after ``since`` was committed."""
        found = []
        for at, where in reversed(self.commits):
            if at < since:
                break
            if where == server:
                found.append(at)
        return found[::-1]

    def first_on(self, server: str, since: float) -> Optional[float]:
        found = self.commits_on(server, since)
        return found[0] if found else None

    def wait(self, predicate: Callable[[], bool], deadline: float) -> bool:
        """Wait until ``predicate()`` or the monotonic ``deadline``, or the
        writer ended; return ``predicate()``."""
        with self._cond:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self.is_alive():
                    return bool(predicate())
                self._cond.wait(min(remaining, 0.5))
            return True

    def stop(self, timeout: float = 30.0) -> None:
        self._stopping.set()
        self.join(timeout)
