"""The "bouncer" topology: a primary behind PgBouncer (transaction
pooling, the test kit's settings: ``server_login_retry=1`` as README
"High availability" recommends), and its fault kinds:

* ``pgbouncer_pause``: PAUSE (new statements wait in PgBouncer), RESUME
  after a while;
* ``pgbouncer_restart``: PgBouncer stops at once (SIGTERM) and starts
  again on its port;
* ``restart_behind_pgbouncer``: PostgreSQL restarts (fast or immediate)
  while PgBouncer stays.

The workers log in as ``launchpad``: PgBouncer's user list (trust) has no
password of the password-protected role to log in to the server with.
"""

from __future__ import annotations

import time
from typing import Any, Dict, List, Optional

from zope.interface import implementer

from chaos.base import DBNAME, ServersTopology, seeded_servers
from chaos.faults import Injector
from chaos.interfaces import IFaultInjector, ITopology
from chaos.topology import register
from canonical.testing.cluster.interfaces import IPgBouncer
from canonical.testing.cluster.interfaces import PgBouncerError

__all__ = ['BouncerTopology', 'BouncerFaultInjector', 'KINDS']

KINDS = ('pgbouncer_pause', 'pgbouncer_restart', 'restart_behind_pgbouncer')
_PAUSE_LIMIT = 5.0


@implementer(ITopology)
class BouncerTopology(ServersTopology):
    """See the module docstring."""

    name = 'bouncer'
    kinds = KINDS
    dbuser = 'launchpad'
    password = None

    def __init__(self, base: str) -> None:
        super().__init__(base)
        self.bouncer: Optional[IPgBouncer] = None

    def start(self, schema: str, accounts: int, opening: int) -> None:
        self.servers = seeded_servers(self.base, schema, accounts, opening)
        self.primary = self.servers.primary('b1')
        self.bouncer = self.servers.bouncer(self.primary)

    @property
    def dbhost(self) -> str:
        return '' if self.bouncer is None else \
            '%s port=%d' % (self.bouncer.host, self.bouncer.port)

    def injector(self, seed: Any, kinds: tuple, interval: float,
                 rounds: Optional[int] = None) -> IFaultInjector:
        return BouncerFaultInjector(seed, self, kinds=kinds,
                                    interval=interval, rounds=rounds)

    def clients(self) -> List[Dict[str, str]]:
        """PgBouncer's client connections to the soak's database."""
        rows = self.bouncer.admin('SHOW CLIENTS', header=True)
        found = [dict(zip(rows[0], row)) for row in rows[1:]]
        return [c for c in found if c.get('database') == DBNAME]

    def leftovers(self, baseline: int, wait: float = 10.0) -> Dict[str, Any]:
        # The server's sessions are PgBouncer's pool, kept on purpose:
        # the library's sessions are PgBouncer's clients.
        from chaos.audit import leftovers
        found = leftovers(self.admin, DBNAME, 10 ** 6, wait=wait)
        deadline = time.monotonic() + wait
        while self.clients() and time.monotonic() < deadline:
            time.sleep(0.1)
        clients = self.clients()
        found['pgbouncer_clients'] = len(clients)
        found['leaked_backends'] = len(clients)
        found['leaked_detail'] = [
            [c.get(k) for k in ('state', 'connect_time', 'request_time',
                                'application_name', 'port')]
            for c in clients[:10]]
        found['baseline'] = 0
        return found

    def stop_kept(self) -> None:
        self.bouncer.stop()
        self.primary.stop('fast')


class BouncerFaultInjector(Injector):
    """See the module docstring."""

    KINDS = KINDS

    def __init__(self, seed: Any, topology: ITopology,
                 kinds: Optional[tuple] = None, interval: float = 1.5,
                 warmup: float = 0.5, rounds: Optional[int] = None) -> None:
        super().__init__(seed, kinds, interval, warmup, rounds)
        self.topology = topology

    def _restore(self) -> None:
        bouncer = self.topology.bouncer
        if not bouncer.is_running():
            bouncer.start()
        try:
            bouncer.resume()
        except PgBouncerError:
            pass  # it was not paused

    def _pgbouncer_pause(self, a: float, b: float) -> dict:
        seconds = 0.2 + 1.3 * a
        started = time.monotonic()
        # PAUSE returns once the transactions under way have ended.  One
        # waiting for a lock of a prepared transaction never ends: the
        # COMMIT PREPARED that would free it is held by the PAUSE.  So it
        # is given a while, then RESUME lets everything on.
        try:
            self.topology.bouncer.admin('PAUSE', timeout=_PAUSE_LIMIT)
            paused = True
        except PgBouncerError:
            paused = False
        took = time.monotonic() - started
        try:
            if paused:
                self._sleep(seconds)
        finally:
            self.topology.bouncer.resume()
        return {'seconds': round(seconds, 3), 'pause_took': round(took, 3),
                'paused': paused}

    def _pgbouncer_restart(self, a: float, b: float) -> dict:
        started = time.monotonic()
        self.topology.bouncer.restart()
        return {'seconds': round(time.monotonic() - started, 3)}

    def _restart_behind_pgbouncer(self, a: float, b: float) -> dict:
        mode = 'fast' if b < 0.5 else 'immediate'
        started = time.monotonic()
        self.topology.primary.restart(mode)
        return {'mode': mode,
                'seconds': round(time.monotonic() - started, 3)}


register('bouncer', KINDS, BouncerTopology, order=20,
         about='a primary behind PgBouncer')
