"""The seeded fault injector (``Injector``) and the faults of the
"single" topology: one cluster behind the test proxy (``FaultInjector``).

The schedule (which fault, when, how long, how hard) is drawn from a
``random.Random(seed)`` with the same number of draws per fault, so one
seed always gives the same sequence.  Kinds are dealt from a shuffled deck:
every kind comes up once before any comes up twice, so even a short run
sees them all.  Choices that depend on the moment (which backends to
terminate) come from a second generator and do not disturb the schedule.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

import psycopg2
from zope.interface import implementer

from chaos.interfaces import IFaultInjector
from canonical.testing.interfaces import ITCPProxy
from canonical.testing.tcpproxy import COMMIT_STATEMENTS

__all__ = ['KINDS', 'Fault', 'Injector', 'FaultInjector']

KINDS = (
    'proxy_cut',
    'commit_in_flight',
    'proxy_stall',
    'terminate_backend',
    'restart_fast',
    'restart_immediate',
    'idle_in_transaction_timeout',
    'statement_timeout',
    'too_many_connections',
    'slow_responses',
)

_TIMEOUT_SETTINGS = ('idle_in_transaction_session_timeout',
                     'statement_timeout')


@dataclass
class Fault:
    kind: str
    started: float
    ended: float = 0.0
    detail: Dict[str, Any] = field(default_factory=dict)
    error: Optional[str] = None


@implementer(IFaultInjector)
class Injector(threading.Thread):
    """The seeded schedule; subclasses give the kinds (``KINDS``) and a
    method ``_<kind>(a, b)`` for each, returning the fault's details.

    With ``rounds``, the injector stops by itself once every kind came up
    that many times.
    """

    KINDS: Tuple[str, ...] = ()

    def __init__(self, seed: Any, kinds: Optional[tuple] = None,
                 interval: float = 1.5, warmup: float = 0.5,
                 rounds: Optional[int] = None) -> None:
        super().__init__(name='chaos-faults', daemon=True)
        kinds = self.KINDS if kinds is None else tuple(kinds)
        unknown = set(kinds) - set(self.KINDS)
        if unknown:
            raise ValueError('unknown fault kinds: %s' % ', '.join(
                sorted(unknown)))
        self.schedule_rng = random.Random('%s/faults' % (seed,))
        self.choice_rng = random.Random('%s/choices' % (seed,))
        self.kinds = kinds
        self.interval = interval
        self.warmup = warmup
        self.rounds = rounds
        self.stop_event = threading.Event()
        self.faults: List[Fault] = []
        self.crashed: Optional[str] = None
        self.server_lost: Dict[str, float] = {}
        self.split_brain_writes = 0
        self._deck: List[str] = []

    # -- the schedule --------------------------------------------------------

    def _deal(self) -> str:
        if not self._deck:
            self._deck = list(self.kinds)
            self.schedule_rng.shuffle(self._deck)
        return self._deck.pop()

    def plan(self) -> tuple:
        """The next (kind, pause before it, a, b): four draws each time."""
        kind = self._deal()
        pause = self.interval * (0.5 + self.schedule_rng.random())
        return (kind, pause, self.schedule_rng.random(),
                self.schedule_rng.random())

    def _done(self) -> bool:
        return self.rounds is not None and \
            len(self.faults) >= self.rounds * len(self.kinds)

    def run(self) -> None:
        try:
            if not self.kinds or self.stop_event.wait(self.warmup):
                return
            while not self._done():
                kind, pause, a, b = self.plan()
                if self.stop_event.wait(pause):
                    return
                fault = Fault(kind, time.monotonic())
                self.faults.append(fault)
                try:
                    fault.detail = getattr(self, '_' + kind)(a, b) or {}
                except Exception as e:  # noqa: BLE001 - recorded
                    fault.error = '%s: %s' % (type(e).__name__, e)
                    self._restore()
                fault.ended = time.monotonic()
        except BaseException as e:  # noqa: BLE001 - reported
            self.crashed = '%s: %s' % (type(e).__name__, e)
        finally:
            self._restore()

    def stop(self, timeout: float = 120.0) -> None:
        self.stop_event.set()
        self._wake()
        self.join(timeout)

    def _wake(self) -> None:
        """Wake a fault waiting on something other than stop_event."""

    def counts(self) -> Dict[str, int]:
        counts = {kind: 0 for kind in self.kinds}
        for fault in self.faults:
            counts[fault.kind] = counts.get(fault.kind, 0) + 1
        return counts

    def _sleep(self, seconds: float) -> None:
        # Faults that last a while still end when the soak stops.
        self.stop_event.wait(seconds)

    def _restore(self) -> None:
        """Undo every lasting fault (idempotent)."""


class FaultInjector(Injector):
    """Injects faults into ``cluster`` and ``proxy`` until stopped.

    ``admin`` is a callable returning a new autocommit superuser
    connection that does not go through the proxy.
    """

    KINDS = KINDS

    def __init__(self, seed: Any, cluster: Any, proxy: ITCPProxy,
                 admin: Callable[..., Any], dbname: str,
                 kinds: tuple = KINDS, interval: float = 1.5,
                 warmup: float = 0.5, rounds: Optional[int] = None) -> None:
        super().__init__(seed, kinds, interval, warmup, rounds)
        self.cluster = cluster
        self.proxy = proxy
        self.admin = admin
        self.dbname = dbname
        self._fillers: List[Any] = []

    def _wake(self) -> None:
        with self.proxy.changed:
            self.proxy.changed.notify_all()

    def _restore(self) -> None:
        self.proxy.resume()
        self.proxy.set_delay(0)
        self.proxy.disarm()
        self._release_fillers()
        try:
            self._set_timeouts(None)
        except psycopg2.Error:
            pass  # the server is down: nothing is in force then either

    # -- the faults ----------------------------------------------------------

    def _proxy_cut(self, a: float, b: float) -> dict:
        hard = b < 0.5
        return {'links': self.proxy.cut(hard=hard), 'reset': hard}

    def _commit_in_flight(self, a: float, b: float) -> dict:
        # Cut links with a COMMIT (or PREPARE) on its way: mostly after
        # the server got it, so only the reply is lost.
        traps = 1 + int(3 * a)
        forwarded = 0
        before = self.proxy.sprung
        for i in range(traps):
            forward = (b + i * 0.37) % 1.0 < 0.75
            forwarded += forward
            self.proxy.trap(COMMIT_STATEMENTS, forward=forward)
        with self.proxy.changed:  # stop() notifies it too
            self.proxy.changed.wait_for(
                lambda: self.proxy.sprung - before >= traps or
                self.stop_event.is_set(), 3.0)
        left = self.proxy.disarm()
        return {'armed': traps, 'forwarded': forwarded,
                'sprung': traps - left}

    def _proxy_stall(self, a: float, b: float) -> dict:
        seconds = 0.3 + 2.2 * a
        self.proxy.stall()
        try:
            self._sleep(seconds)
        finally:
            self.proxy.resume()
        return {'seconds': round(seconds, 3)}

    def _backends(self, conn: Any) -> List[int]:
        cur = conn.cursor()
        cur.execute("SELECT pid FROM pg_stat_activity "
                    "WHERE application_name = 'zopeless' AND datname = %s "
                    "ORDER BY pid", (self.dbname,))
        return [row[0] for row in cur.fetchall()]

    def _terminate_backend(self, a: float, b: float) -> dict:
        conn = self.admin()
        try:
            pids = self._backends(conn)
            if not pids:
                return {'terminated': 0}
            share = 0.25 + 0.75 * a
            victims = self.choice_rng.sample(
                pids, max(1, int(round(len(pids) * share))))
            cur = conn.cursor()
            cur.execute('SELECT count(*) FROM (SELECT pg_terminate_backend(p)'
                        ' FROM unnest(%s::int[]) AS p) AS t', (victims,))
            return {'terminated': len(victims), 'backends': len(pids)}
        finally:
            conn.close()

    def _restart(self, mode: str) -> dict:
        started = time.monotonic()
        self.cluster.restart(mode)
        return {'seconds': round(time.monotonic() - started, 3)}

    def _restart_fast(self, a: float, b: float) -> dict:
        return self._restart('fast')

    def _restart_immediate(self, a: float, b: float) -> dict:
        return self._restart('immediate')

    def _set_timeouts(self, setting: Optional[str],
                      value: str = '') -> None:
        conn = self.admin()
        try:
            cur = conn.cursor()
            for name in _TIMEOUT_SETTINGS:
                if name == setting:
                    cur.execute('ALTER SYSTEM SET %s = %%s' % name, (value,))
                else:
                    cur.execute('ALTER SYSTEM RESET %s' % name)
            cur.execute('SELECT pg_reload_conf()')
        finally:
            conn.close()

    def _timeout(self, setting: str, value: str, seconds: float) -> dict:
        self._set_timeouts(setting, value)
        try:
            self._sleep(seconds)
        finally:
            self._set_timeouts(None)
        return {'value': value, 'seconds': round(seconds, 3)}

    def _idle_in_transaction_timeout(self, a: float, b: float) -> dict:
        return self._timeout('idle_in_transaction_session_timeout',
                             '%dms' % (100 + 100 * b), 1.0 + 2.0 * a)

    def _statement_timeout(self, a: float, b: float) -> dict:
        return self._timeout('statement_timeout', '%dms' % (100 + 100 * b),
                             1.0 + 2.0 * a)

    def _too_many_connections(self, a: float, b: float) -> dict:
        # Hold the workers' new connections in the proxy, cut their links,
        # take every slot the server has (theirs too, as their backends
        # exit), then let them in: they meet "too many clients".
        self.proxy.stall()
        try:
            links = self.proxy.cut()
            deadline = time.monotonic() + 0.5
            refused = 0
            while time.monotonic() < deadline:
                try:
                    self._fillers.append(self.admin(
                        application_name='chaos-filler'))
                except psycopg2.OperationalError as e:
                    if 'too many' not in str(e) and \
                            'reserved' not in str(e):
                        raise
                    refused += 1
                    time.sleep(0.01)
        finally:
            self.proxy.resume()
        held = len(self._fillers)
        seconds = 0.5 + 1.5 * a
        try:
            self._sleep(seconds)
        finally:
            self._release_fillers()
        return {'cut': links, 'held': held, 'refused': refused,
                'seconds': round(seconds, 3)}

    def _release_fillers(self) -> None:
        fillers, self._fillers = self._fillers, []
        for conn in fillers:
            try:
                conn.close()
            except psycopg2.Error:
                pass

    def _slow_responses(self, a: float, b: float) -> dict:
        delay = 0.02 + 0.13 * b
        seconds = 1.0 + 2.0 * a
        self.proxy.set_delay(down=delay)
        try:
            self._sleep(seconds)
        finally:
            self.proxy.set_delay(0)
        return {'delay': round(delay, 3), 'seconds': round(seconds, 3)}
