"""What a process knows of a database's standbys: one sampler per database.

Standbys are found in the same host list as the primary (``dbhost='db1,db2,
db3'``): a role is what a server says it is, not what a configuration
said it was, so a promotion moves a host from the readers to the writer
without anyone editing anything.  A single host (a pooler, HAProxy) has
no standby the library can see: standby units then run on the primary,
read-only, as Launchpad's policy does on an unreplicated database.

One background thread per database samples every host of the list a few
times a second, on one idle connection per host:

* the primary's WAL insert position, kept as a short history of (time,
  position) each time it moved;
* each standby's replay position.

A standby's lag is how long ago the primary first went past what the
standby has replayed: 0 while it has replayed everything the primary had,
so it never grows on an idle primary (``now() -
pg_last_xact_replay_timestamp()``, Launchpad's measure, does).  With the
primary gone, the last position seen stays the reference: standbys that
replayed it are current, and read units go on.

A host that does not answer in time is made suspect through hosts.py (the
writer's prober brings it back); the sampler skips suspects, so a silent
host costs its timeout once, never once per unit.

Read-your-writes: the library's COMMIT returns, in the same message, the
WAL position it ended at when the transaction wrote (see txcontrol.py);
``floor`` is the highest of this process.  Commits made before a standby
policy was first used (or in autocommit mode) are covered by asking the
primary its position once, at the next read unit.
"""

from __future__ import annotations

import bisect
import logging
import random
import threading
import time
import weakref
from typing import Any, Dict, List, Optional, Tuple

import psycopg2
from zope.interface import implementer

from canonical.database.classify import connect_failure_kind
from canonical.database.classify import server_message
from canonical.database.hosts import servers_for
from canonical.database.interfaces import IDatabaseConfig
from canonical.database.interfaces import IStandbyMonitor
from canonical.database.perdatabase import PerDatabase
from canonical.database.positions import parse_lsn
from canonical.database.positions import positions_for

__all__ = ['StandbyMonitor', 'standbys_for', 'stop_all']

log = logging.getLogger('canonical.database.standbys')

# Seconds between two sampling rounds.
_INTERVAL = 0.25
# Positions of the primary remembered (one per round where it moved).
_HISTORY = 4096
_SAMPLE_SQL = (
    'SELECT pg_is_in_recovery(), (CASE WHEN pg_is_in_recovery() '
    'THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_insert_lsn() END)'
    '::text')

class _Host:
    """A host of the list, as the sampler last saw it."""

    def __init__(self, label: str, params: Dict[str, str]) -> None:
        self.label = label
        self.params = params
        self.role = 'unknown'   # primary, standby, down, suspect
        self.replayed: Optional[int] = None
        self.conn: Any = None
        self.readers = 0


_monitors: 'weakref.WeakSet[StandbyMonitor]' = weakref.WeakSet()


@implementer(IStandbyMonitor)
class StandbyMonitor:
    """See IStandbyMonitor; one per database and process."""

    def __init__(self, config: IDatabaseConfig) -> None:
        self.config = config
        self.max_usable_lag = config.max_usable_lag
        self._servers = servers_for(config)
        self._positions = positions_for(config)
        self._hosts = [_Host(label, params)
                       for label, params in self._servers.entries()]
        self._lock = threading.Lock()       # the figures below
        self._sampling = threading.Lock()   # the sampler's connections
        self._history: List[Tuple[float, int]] = []
        self._seen: List[int] = []   # the positions of _history, for bisect
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.samples = 0
        _monitors.add(self)

    @property
    def floor(self) -> int:
        return self._positions.floor

    def tracking(self) -> bool:
        return self._positions.tracking

    # -- running -----------------------------------------------------------

    def start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._positions.tracking = True
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._run, daemon=True,
                name='zopeless-standby-monitor')
        # Before the first read unit chooses: what the hosts are now (and
        # the position of commits made before tracking began).
        self.sample()
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(_INTERVAL):
            try:
                self.sample()
            except Exception:  # noqa: BLE001 - the sampler must go on
                log.exception('Sampling the standbys failed.')

    def stop(self) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
            self._stop.set()
            self._positions.tracking = False
        if thread is not None and thread is not threading.current_thread():
            thread.join(10)
        with self._sampling:
            for host in self._hosts:
                self._close(host)

    # -- sampling ----------------------------------------------------------

    def sample(self) -> None:
        """One round: the primary first, so a standby found at or past its
        position is current; suspect hosts are left to hosts.py's
        prober."""
        # Cleared only when seen set: a commit that sets it after this
        # look is seen by the next round; one that set it before finished
        # before the primary is asked below.
        untracked = self._positions.untracked
        if untracked:
            self._positions.untracked = False
        with self._sampling:
            suspects = set(self._servers.suspects())
            primary = None
            for host in sorted(self._hosts, key=lambda h: h.role != 'primary'):
                if host.label in suspects and len(self._hosts) > 1:
                    host.role = 'suspect'
                    self._close(host)
                    continue
                position = self._sample_host(host)
                if position is not None:
                    primary = max(primary or 0, position)
            with self._lock:
                if untracked:
                    if primary is None:
                        # Nobody to ask: still unknown, asked again.
                        self._positions.untracked = True
                    else:
                        # Commits nobody asked the position of are behind
                        # the primary's position now.
                        self._positions.raise_to(primary)
                self.samples += 1

    def _connect_kwargs(self, host: _Host) -> Dict[str, str]:
        kwargs = self.config.connect_kwargs()
        kwargs.update(host.params)
        kwargs['target_session_attrs'] = 'any'
        kwargs['application_name'] = 'zopeless-standby-monitor'
        return kwargs

    def _sample_host(self, host: _Host) -> Optional[int]:
        """Sample ``host``; its position when it is a primary."""
        try:
            if host.conn is None or host.conn.closed:
                host.conn = psycopg2.connect(**self._connect_kwargs(host))
                host.conn.autocommit = True
            cursor = host.conn.cursor()
            cursor.execute(_SAMPLE_SQL)
            in_recovery, position = cursor.fetchone()
            cursor.close()
        except psycopg2.Error as e:
            self._close(host)
            host.role = 'down'
            reason = server_message(e)
            if connect_failure_kind(e) == 'timeout' or \
                    'timed out' in reason.lower():
                self._servers.suspect(host.label, self.config)
            return None
        now = time.monotonic()
        with self._lock:
            if in_recovery:
                # The latest figure, not the highest: a server rewound
                # after a failover replays another history.
                host.role = 'standby'
                host.replayed = parse_lsn(position)
                return None
            host.role = 'primary'
            self._note_primary(now, parse_lsn(position))
            return parse_lsn(position)

    def _note_primary(self, now: float, position: int) -> None:
        if not self._history or position > self._history[-1][1]:
            self._history.append((now, position))
            self._seen.append(position)
            if len(self._history) > _HISTORY:
                del self._history[:-_HISTORY], self._seen[:-_HISTORY]

    @staticmethod
    def _close(host: _Host) -> None:
        conn, host.conn = host.conn, None
        if conn is not None:
            try:
                conn.close()
            except psycopg2.Error:
                pass

    # -- figures -----------------------------------------------------------

    def _host(self, label: str) -> Optional[_Host]:
        for host in self._hosts:
            if host.label == label:
                return host
        return None

    def lag(self, label: str) -> Optional[float]:
        with self._lock:
            host = self._host(label)
            if host is None or host.role != 'standby' or \
                    host.replayed is None:
                return None
            return self._lag(host)

    def _lag(self, host: _Host) -> Optional[float]:
        if not self._history:
            return None  # no primary seen yet: nothing to compare with
        if host.replayed >= self._history[-1][1]:
            return 0.0
        # The first position seen past what the standby replayed.
        index = bisect.bisect_right(self._seen, host.replayed)
        return max(0.0, time.monotonic() - self._history[index][0])

    def hosts(self) -> Dict[str, Dict[str, Any]]:
        with self._lock:
            return {h.label: {'role': h.role, 'replayed': h.replayed,
                              'lag': self._lag(h) if h.role == 'standby'
                              and h.replayed is not None else None,
                              'readers': h.readers}
                    for h in self._hosts}

    def candidates(self, floor: int = 0,
                   max_lag: Optional[float] = None) -> List[str]:
        limit = self.max_usable_lag if max_lag is None else max_lag
        with self._lock:
            usable = []
            for host in self._hosts:
                if host.role != 'standby':
                    continue
                lag = self._lag(host) if host.replayed is not None else None
                if lag is not None and lag > limit:
                    continue
                usable.append(host)
            # The least used first (a standby behind our last commit
            # costs its catch-up, a round trip or two: a lasting load
            # weighs more), then those known past it; ties at random, so
            # processes spread too.
            usable.sort(key=lambda h: (h.readers, (h.replayed or 0) < floor,
                                       random.random()))
            return [h.label for h in usable]

    def replayed(self, label: str) -> int:
        host = self._host(label)
        return (host.replayed or 0) if host is not None else 0

    def note_replayed(self, label: str, position: int) -> None:
        with self._lock:
            host = self._host(label)
            if host is not None and position > (host.replayed or 0):
                host.replayed = position

    def note_role(self, label: str, role: str) -> None:
        """What a reader found out first (a promotion, a refusal)."""
        with self._lock:
            host = self._host(label)
            if host is not None:
                host.role = role

    def attach(self, label: str, delta: int) -> None:
        with self._lock:
            host = self._host(label)
            if host is not None:
                host.readers = max(0, host.readers + delta)

    def host_params(self, label: str) -> Dict[str, str]:
        host = self._host(label)
        return dict(host.params) if host is not None else {}

    def floor_now(self) -> Optional[int]:
        """``floor``, with commits nobody asked the position of (before
        tracking, two-phase, a lost answer) covered by one sampling round
        now; None when no primary answered it."""
        if self._positions.untracked:
            self.sample()
            if self._positions.untracked:
                return None
        return self._positions.floor


def stop_all() -> None:
    """Stop every sampler of the process (uninstall, tests' clean-up)."""
    for monitor in list(_monitors):
        monitor.stop()


# The process's objects for a configuration's database.
standbys_for: PerDatabase[StandbyMonitor] = PerDatabase(StandbyMonitor)

try:
    from zope.testing.cleanup import addCleanUp
except ImportError:  # the test kit is not installed: nothing to register
    pass
else:
    addCleanUp(stop_all)
