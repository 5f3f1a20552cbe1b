"""Statistics of each database, for monitoring: one IDatabaseStats per
database and process.

The library counts as it goes (connections made, outages, units of work
committed or failed, outcomes settled, failovers seen ...) with plain
integer increments on one shared object: no lock on the path of a
transaction.  Monitoring reads them, as psycopg_pool's get_stats() and
pop_stats() do::

    from canonical.database.stats import get_stats
    get_stats().get_stats()['units_committed']

``canonical.database.prometheus`` exports them to Prometheus.  A figure
added later (the standbys' lag, say) is one more attribute here, one more
line in FIGURES, and one more row in the exporter's table.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Dict, List, Optional, Tuple

from zope.component import queryUtility
from zope.interface import implementer

from canonical.database.classify import is_retryable_conflict
from canonical.database.interfaces import CommitOutcomeUnknownError
from canonical.database.interfaces import DisconnectionError
from canonical.database.interfaces import IDatabaseConfig
from canonical.database.interfaces import IDatabaseConnection
from canonical.database.interfaces import IDatabaseStats
from canonical.database.interfaces import IMeasuredConnection
from canonical.database.interfaces import IZopelessTransactionManager
from canonical.database.interfaces import ReadOnlyServerError
from canonical.database.interfaces import TransactionAbortedError
from canonical.database.interfaces import TransactionLostError
from canonical.database.perdatabase import PerDatabase

__all__ = ['DatabaseStats', 'stats_for', 'get_stats', 'all_stats',
           'failure_kind', 'stats_of', 'COUNTERS', 'KIND_COUNTERS']

# The counters of IDatabaseStats: plain numbers, and dicts of kind -> number.
COUNTERS = ('connections', 'connections_dropped', 'reconnects', 'outages',
            'outage_seconds', 'unavailable', 'units_committed',
            'units_rolled_back', 'replays', 'failovers')
KIND_COUNTERS = ('connect_failures', 'units_failed', 'outcomes_resolved',
                 'hosts_skipped')

# Library errors by the kind of failure they count as (most derived first).
_KINDS: Tuple[Tuple[type, str], ...] = (
    (ReadOnlyServerError, 'read_only'),
    (DisconnectionError, 'disconnection'),
    (CommitOutcomeUnknownError, 'outcome_unknown'),
    (TransactionLostError, 'lost'),
    (TransactionAbortedError, 'aborted'),
)


def failure_kind(error: BaseException) -> str:
    """The key of IDatabaseStats.units_failed that ``error`` counts as."""
    for cls, kind in _KINDS:
        if isinstance(error, cls):
            return kind
    return 'conflict' if is_retryable_conflict(error) else 'error'


def _add(counts: Dict[str, int], kind: str, n: int = 1) -> None:
    counts[kind] = counts.get(kind, 0) + n


@implementer(IDatabaseStats)
class DatabaseStats:
    """See IDatabaseStats; one per database and process (stats_for)."""

    def __init__(self, config: IDatabaseConfig) -> None:
        self.database = config.get('dbname') or ''
        self.target = config.describe()
        self.connections = 0
        self.connect_failures: Dict[str, int] = {}
        self.connections_dropped = 0
        self.reconnects = 0
        self.outages = 0
        self.unavailable = 0
        self.units_committed = 0
        self.units_rolled_back = 0
        self.units_failed: Dict[str, int] = {}
        self.outcomes_resolved: Dict[str, int] = {}
        self.replays = 0
        self.failovers = 0
        self.hosts_skipped: Dict[str, int] = {}
        self._outage_total = 0.0
        self._outage_started: Optional[float] = None
        # Rare events (a connection made, an outage) take this lock; the
        # counters of units never do.
        self._lock = threading.Lock()
        self._server: Optional[Tuple[Any, ...]] = None
        self._popped: Dict[str, Any] = {}

    # -- counting (the library calls these) ----------------------------------

    def unit_ended(self, failure: Optional[str]) -> None:
        """A unit of work ended without committing: ``failure`` is the
        kind of error that ended it, or None for a plain rollback."""
        if failure is None:
            self.units_rolled_back += 1
        else:
            self.count(self.units_failed, failure)

    def count(self, counts: Dict[str, int], kind: str, n: int = 1) -> None:
        """Add ``n`` to ``counts[kind]`` (one of the kind dicts)."""
        with self._lock:
            _add(counts, kind, n)

    def outage_began(self) -> None:
        with self._lock:
            if self._outage_started is None:
                self._outage_started = time.monotonic()
            self.outages += 1

    def outage_ended(self) -> None:
        with self._lock:
            if self._outage_started is not None:
                self._outage_total += time.monotonic() - self._outage_started
                self._outage_started = None

    def note_server(self, raw: Any) -> None:
        """A connection was made: count a failover when its server is not
        the one the connection before reached (another system identifier or
        timeline, as identity.py asked, or another entry of the host
        list).  What a connection was not asked (a reader's timeline)
        changes nothing."""
        server = getattr(raw, 'server', None)
        seen = (getattr(server, 'system', None),
                getattr(server, 'timeline', None),
                getattr(raw, 'host_label', None))
        with self._lock:
            before = self._server
            if before is None:
                self._server = seen
                return
            self._server = tuple(new if new is not None else old
                                 for new, old in zip(seen, before))
            if any(new is not None and old is not None and new != old
                   for new, old in zip(seen, before)):
                self.failovers += 1

    # -- reading -------------------------------------------------------------

    @property
    def outage_seconds(self) -> float:
        started = self._outage_started
        total = self._outage_total
        if started is not None:
            total += time.monotonic() - started
        return total

    @property
    def in_outage(self) -> bool:
        return self._outage_started is not None

    def get_stats(self) -> Dict[str, Any]:
        figures: Dict[str, Any] = {'database': self.database,
                                   'target': self.target,
                                   'in_outage': self.in_outage}
        for name in COUNTERS:
            figures[name] = getattr(self, name)
        for name in KIND_COUNTERS:
            figures[name] = dict(getattr(self, name))
        return figures

    def pop_stats(self) -> Dict[str, Any]:
        figures = self.get_stats()
        with self._lock:
            before, self._popped = self._popped, figures
        delta = dict(figures)
        for name in COUNTERS:
            delta[name] = figures[name] - before.get(name, 0)
        for name in KIND_COUNTERS:
            old = before.get(name, {})
            delta[name] = {kind: n - old.get(kind, 0)
                           for kind, n in figures[name].items()
                           if n != old.get(kind, 0)}
        return delta

    def __repr__(self) -> str:
        return '<DatabaseStats %s: %d committed, %d failed>' % (
            self.target, self.units_committed,
            sum(self.units_failed.values()))


# The process's statistics of a configuration's database.
stats_for: PerDatabase[DatabaseStats] = PerDatabase(DatabaseStats)


def stats_of(db: IDatabaseConnection) -> Optional[IDatabaseStats]:
    """The statistics ``db`` counts into, or None for a connection a site
    registered that does not count (see IMeasuredConnection)."""
    return db.stats if IMeasuredConnection.providedBy(db) else None


def all_stats() -> List[IDatabaseStats]:
    """The statistics of every database this process used so far."""
    return stats_for.objects()


def get_stats(database: Optional[str] = None) -> IDatabaseStats:
    """The statistics of the database ``database`` (its name, as in
    initZopeless(dbname=...)) or, without one, of the installed
    transaction manager's database.

    Raises LookupError when there is no such database (nothing installed,
    or not used yet in this process), or more than one of that name (other
    hosts or users: all_stats() lists them).
    """
    if database is None:
        ztm = queryUtility(IZopelessTransactionManager)
        if ztm is None:
            raise LookupError('No transaction manager is installed: call '
                              'initZopeless(), or name the database.')
        return stats_for(ztm.config)
    found = [s for s in all_stats() if s.database == database]
    if len(found) != 1:
        raise LookupError(
            'This process %s database %r; all_stats() lists those it used.'
            % ('has used no' if not found else 'has used more than one',
               database))
    return found[0]
