"""DBLoopTuner: a loop tuner that gives way to a strained database.

A batch job that keeps writing while another transaction has been open for
a long time makes the dead rows it leaves impossible to vacuum, and one
that writes faster than the standbys replay makes them fall behind.
Between chunks this tuner looks at pg_stat_activity and
pg_stat_replication; while a transaction of the same database is older
than ``long_transaction_seconds``, or a standby lags by more than
``replication_lag_seconds``, it aborts its own transaction and waits.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, List, Optional, Tuple

from zope.interface import implementer

from canonical.database.interfaces import TransactionInProgressError
from canonical.database.interfaces import IDatabaseConnection
from canonical.database.reconnect import ReconnectCoordinator
from canonical.database.reconnect import coordinator_for
from canonical.launchpad.scripts.completion import abort_quietly
from canonical.launchpad.scripts.interfaces import IDBLoopTuner
from canonical.launchpad.scripts.looptuner import LoopTuner
from canonical.launchpad.scripts.looptuner import is_retryable

__all__ = ['DBLoopTuner']

_LONG_TRANSACTIONS = """
    SELECT pid, usename, datname,
           EXTRACT(EPOCH FROM statement_timestamp() - xact_start)::float8,
           state, left(regexp_replace(query, '\\s+', ' ', 'g'), 80)
    FROM pg_stat_activity
    WHERE xact_start < statement_timestamp() - make_interval(secs => %s)
      AND pid <> pg_backend_pid()
      AND backend_type = 'client backend'
      AND datname = current_database()
    ORDER BY xact_start
"""

_REPLICATION_LAG = """
    SELECT count(*),
           max(EXTRACT(EPOCH FROM replay_lag))::float8,
           pg_has_role('pg_read_all_stats', 'USAGE')
    FROM pg_stat_replication
"""

Blocker = Tuple[int, str, str, float, str, str]


@implementer(IDBLoopTuner)
class DBLoopTuner(LoopTuner):
    """See IDBLoopTuner."""

    long_transaction_seconds = 30 * 60.0
    replication_lag_seconds = 30.0
    cooldown_poll_seconds = 5.0

    def __init__(self, *args: Any,
                 long_transaction_seconds: Optional[float] = None,
                 replication_lag_seconds: Optional[float] = None,
                 cooldown_poll_seconds: Optional[float] = None,
                 **kw: Any) -> None:
        super().__init__(*args, **kw)
        if long_transaction_seconds is not None:
            self.long_transaction_seconds = long_transaction_seconds
        if replication_lag_seconds is not None:
            self.replication_lag_seconds = replication_lag_seconds
        if cooldown_poll_seconds is not None:
            self.cooldown_poll_seconds = cooldown_poll_seconds
        self._told_blind = False

    # -- the checks -----------------------------------------------------------

    def longRunningTransactions(self) -> List[Blocker]:
        with self._transaction() as db:
            return [tuple(row) for row in db.execute(
                _LONG_TRANSACTIONS,
                (self.long_transaction_seconds,)).fetchall()]

    def replicationLag(self) -> Optional[float]:
        return self._lag(self._lag_row())

    def _lag_row(self) -> tuple:
        with self._transaction() as db:
            return db.execute(_REPLICATION_LAG).fetchone()

    @staticmethod
    def _lag(row: tuple) -> Optional[float]:
        standbys, lag, privileged = row
        if not standbys or not privileged:
            return None
        return lag or 0.0  # NULL: caught up and idle

    def _strain(self) -> List[str]:
        """Why the database needs a rest now; empty when it does not."""
        with self._transaction():  # one transaction for all the checks
            blockers = self.longRunningTransactions()
            row = self._lag_row()
        if not row[2] and not self._told_blind:
            self._told_blind = True
            self.log.info("This database role cannot see other roles' "
                          "transactions nor the standbys' lag: grant it "
                          "pg_monitor so the loop gives way to them.")
        reasons = ['transaction of %s on %s (pid %d) open for %.1f s, %s: %s'
                   % (user, db, pid, age, state, query)
                   for pid, user, db, age, state, query in blockers]
        lag = self._lag(row)
        if lag is not None and lag > self.replication_lag_seconds:
            reasons.append('replication lag %.1f s (threshold %.1f s)'
                           % (lag, self.replication_lag_seconds))
        return reasons

    @contextmanager
    def _transaction(self) -> Iterator[IDatabaseConnection]:
        """This thread's IDatabaseConnection, in the transaction in
        progress or, with explicit begin, in a short one of its own."""
        from canonical.lp import installedTransactionManager
        ztm = installedTransactionManager()
        began = False
        if not ztm.implicitBegin:
            try:
                ztm.begin()
                began = True
            except TransactionInProgressError:
                pass
        try:
            yield ztm.connection()
        finally:
            if began:
                ztm.abort()

    # -- LoopTuner hooks ------------------------------------------------------

    def _coolDown(self) -> None:
        super()._coolDown()
        marker = self._outage_marker()
        try:
            self._wait_while_strained()
        finally:
            waited = self._downtime_since(marker)
            if waited:
                self.stats.downtime += waited
                self.log.info('Waited %.2f s for the database between two '
                              'chunks.', waited)

    def _wait_while_strained(self) -> None:
        started = next_report = None
        try:
            while not self._out_of_time():
                try:
                    reasons = self._strain()
                except Exception as error:
                    if not is_retryable(error):
                        raise
                    # The link died under the check: the next chunk's
                    # begin() waits for the database and measures it.
                    abort_quietly()
                    self.log.debug('Could not check the database: %s', error)
                    break
                if not reasons:
                    break
                abort_quietly()  # never be a long transaction ourselves
                now = self._time()
                if started is None:
                    started = now
                    self.stats.cooldowns += 1
                if next_report is None or now >= next_report:
                    next_report = now + self.progress_interval
                    for reason in reasons:
                        self.log.info('Cooling down%s: %s.', '' if
                                      now == started else ' (%.0f s so far)'
                                      % (now - started), reason)
                self._sleep(self.cooldown_poll_seconds)
        finally:
            if started is not None:
                seconds = self._time() - started
                self.stats.cooldown_seconds += seconds
                self.log.info('Cooled down for %.2f s; carrying on.',
                              seconds)

    def _outage_marker(self) -> Optional[int]:
        coordinator = self._coordinator()
        return None if coordinator is None else coordinator.outages

    def _downtime_since(self, marker: Optional[int]) -> float:
        coordinator = self._coordinator()
        if coordinator is None or marker is None or \
                coordinator.outages == marker or coordinator.in_outage:
            return 0.0
        return coordinator.last_downtime

    @staticmethod
    def _coordinator() -> Optional[ReconnectCoordinator]:
        from canonical.lp import installedTransactionManager
        ztm = installedTransactionManager()
        return None if ztm is None else coordinator_for(ztm.config)
