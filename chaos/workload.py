"""The workers: short explicit transactions, one unit of work each.

A unit moves an amount between two accounts and inserts its transfer row
under a client-side uid.  It runs through ``transaction.manager.attempts()``
and, when those give up, the worker runs it again under the same uid, so
the audit can check that whatever the faults did, a unit is in the
database once if it was reported committed and not at all otherwise.

Some units also join a second data manager (``Journal``), which makes the
library commit in two phases (PREPARE TRANSACTION / COMMIT PREPARED).
"""

from __future__ import annotations

import collections
import random
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import transaction
from sqlobject.sqlbuilder import IN
from transaction.interfaces import IDataManager
from zope.interface import implementer

from chaos.models import Account, Transfer
from canonical.database.classify import error_chain
from canonical.database.interfaces import CommitOutcomeUnknownError
from canonical.database.interfaces import DatabaseUnavailableError
from canonical.database.interfaces import DisconnectionError
from canonical.database.interfaces import NoTransactionError

__all__ = ['Unit', 'Journal', 'JournalBook', 'Worker', 'classify_error',
           'transfer', 'server_of', 'set_up_thread']

# SQLSTATEs a worker may legitimately see from a statement: a statement
# timeout, and conflicts the attempts() loop retries.
_EXPECTED_CODES = {'57014', '40001', '40P01'}


def classify_error(error: BaseException, resolve: bool) -> str:
    """'expected', or 'unexpected' for an exception type the library
    should not let through in this situation."""
    if isinstance(error, (DisconnectionError, DatabaseUnavailableError)):
        return 'expected'
    if isinstance(error, CommitOutcomeUnknownError):
        return 'unexpected' if resolve else 'expected'
    for item in error_chain(error):
        if getattr(item, 'pgcode', None) in _EXPECTED_CODES:
            return 'expected'
    return 'unexpected'


def error_name(error: BaseException) -> str:
    cls = type(error)
    return '%s.%s' % (cls.__module__, cls.__qualname__)


@dataclass
class Unit:
    """One unit of work and what became of it."""

    uid: str
    worker: int
    src: int
    dst: int
    amount: int
    two_phase: bool
    started: float
    state: str = 'pending'  # committed, ambiguous or failed
    attempts: int = 0       # times the body ran
    failures: int = 0       # failed attempts (begin, body or commit)
    errors: List[str] = field(default_factory=list)
    first_error: Optional[float] = None
    done: Optional[float] = None
    error_times: List[float] = field(default_factory=list)
    server: Optional[str] = None  # host:port of its last attempt

    def note(self, error: BaseException, now: float) -> None:
        self.failures += 1
        if len(self.errors) < 8:
            self.errors.append(error_name(error))
        self.error_times.append(now)
        if self.first_error is None:
            self.first_error = now


@implementer(IDataManager)
class Journal:
    """A second data manager: records the uid when the transaction commits.

    Its presence makes the database vote with PREPARE TRANSACTION.
    """

    def __init__(self, book: 'JournalBook', uid: str) -> None:
        self.book = book
        self.uid = uid
        self.transaction_manager = transaction.manager

    def abort(self, txn: Any) -> None:
        pass

    def tpc_begin(self, txn: Any) -> None:
        pass

    def commit(self, txn: Any) -> None:
        pass

    def tpc_vote(self, txn: Any) -> None:
        pass

    def tpc_finish(self, txn: Any) -> None:
        self.book.record(self.uid)

    def tpc_abort(self, txn: Any) -> None:
        pass

    def sortKey(self) -> str:
        return 'chaos-journal:' + self.uid


class JournalBook:
    """What the journals recorded, for the audit."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.entries: Dict[str, int] = collections.Counter()

    def record(self, uid: str) -> None:
        with self._lock:
            self.entries[uid] += 1


class Worker(threading.Thread):
    """Runs units until told to stop; gives up on a unit only when told."""

    def __init__(self, index: int, ztm: Any, seed: int, accounts: int,
                 journal: JournalBook, stop: threading.Event,
                 give_up: threading.Event, resolve: bool,
                 two_phase_share: float = 0.2, idle_share: float = 0.05,
                 slow_share: float = 0.05, tries: int = 5) -> None:
        super().__init__(name='chaos-worker-%d' % index, daemon=True)
        self.index = index
        self.ztm = ztm
        self.rng = random.Random('%s/worker/%d' % (seed, index))
        self.accounts = accounts
        self.journal = journal
        self.stop = stop
        self.give_up = give_up
        self.resolve = resolve
        self.two_phase_share = two_phase_share
        self.idle_share = idle_share
        self.slow_share = slow_share
        self.tries = tries
        self.units: List[Unit] = []
        self.commit_times: List[float] = []
        self.unexpected: Dict[str, str] = {}
        self.samples: Dict[str, str] = {}
        self.leftover_transactions = 0
        self.joined_by_synchronizer: Optional[bool] = None
        self.crashed: Optional[str] = None
        self.current: Optional[Unit] = None
        self.last_progress = time.monotonic()
        self._seen: collections.deque = collections.deque(maxlen=16)

    # -- the loop ------------------------------------------------------------

    def run(self) -> None:
        try:
            set_up_thread(self.ztm)
            n = 0
            while not self.stop.is_set():
                n += 1
                src, dst = self.rng.sample(range(1, self.accounts + 1), 2)
                unit = Unit(uid='w%d-%d' % (self.index, n), worker=self.index,
                            src=src, dst=dst, amount=self.rng.randint(1, 100),
                            two_phase=self.rng.random() < self.two_phase_share,
                            started=time.monotonic())
                self.units.append(unit)
                self.current = unit
                self._run_unit(unit)
                self.current = None
                self.last_progress = time.monotonic()
        except BaseException as e:  # noqa: BLE001 - reported by the audit
            self.crashed = '%s: %s' % (error_name(e), str(e)[:300])

    def _run_unit(self, unit: Unit) -> None:
        while True:
            try:
                self._attempts(unit)
            except CommitOutcomeUnknownError as e:
                self._note(unit, e)
                unit.state = 'ambiguous'
                unit.done = time.monotonic()
                return
            except Exception as e:  # noqa: BLE001 - counted, then retried
                self._note(unit, e)
                self._clean_up()
                if self.give_up.is_set():
                    unit.state = 'failed'
                    unit.done = time.monotonic()
                    return
                time.sleep(0.01 + self.rng.random() * 0.04)
                continue
            now = time.monotonic()
            unit.state = 'committed'
            unit.done = now
            self.commit_times.append(now)
            return

    def _attempts(self, unit: Unit) -> None:
        for attempt in transaction.manager.attempts(self.tries):
            with attempt:
                unit.attempts += 1
                txn = transaction.get()
                txn.addAfterCommitHook(self._after_commit, (unit,))
                try:
                    self._body(unit, txn)
                except Exception as e:
                    self._note(unit, e)
                    raise

    def _after_commit(self, status: bool, unit: Unit) -> None:
        if not status:
            error = sys.exc_info()[1]
            if error is not None:
                self._note(unit, error)

    def _note(self, unit: Unit, error: BaseException) -> None:
        # The same exception may be seen by the body, the commit hook and
        # the worker loop: count it once.
        if any(seen is error for seen in self._seen):
            return
        self._seen.append(error)
        _release_frames(error)
        unit.note(error, time.monotonic())
        self.samples.setdefault(error_name(error),
                                ' '.join(str(error).split())[:200])
        if classify_error(error, self.resolve) == 'unexpected':
            self.unexpected.setdefault(
                error_name(error), ' '.join(str(error).split())[:300])

    def _clean_up(self) -> None:
        """A failed attempt must leave no transaction open behind it."""
        try:
            transaction.manager.get()
        except Exception:  # noqa: BLE001 - NoTransaction: all is well
            return
        self.leftover_transactions += 1
        try:
            transaction.manager.abort()
        except Exception:  # noqa: BLE001
            pass

    # -- one attempt -----------------------------------------------------

    def _body(self, unit: Unit, txn: Any) -> None:
        if self.joined_by_synchronizer is None:
            self.joined_by_synchronizer = Account._connection is not None
        if unit.two_phase:
            txn.join(Journal(self.journal, unit.uid))
        rows = lock_accounts(unit)
        unit.server = server_of(self.ztm)
        Transfer(uid=unit.uid, src=unit.src, dst=unit.dst,
                 amount=unit.amount)
        draw = self.rng.random()
        if draw < self.idle_share:
            time.sleep(0.3)  # idle in transaction
        elif draw < self.idle_share + self.slow_share:
            self.ztm.connection().execute('SELECT pg_sleep(0.3)')
        move(unit, rows)


def set_up_thread(ztm: Any) -> None:
    """Any call of the manager sets this thread up, which joins the
    database to transactions that attempts() begins."""
    try:
        ztm.abort()
    except NoTransactionError:
        pass


def _release_frames(error: BaseException) -> None:
    """The worker keeps recent exceptions (to count each once): the
    frames of their tracebacks (those that are done) need not keep what
    the attempt used alive after the thread ends.  (The library closes a
    thread's connection when the thread ends, whatever still holds it.)"""
    for item in error_chain(error):
        traceback.clear_frames(item.__traceback__)


def server_of(ztm: Any) -> str:
    """host:port of the server the current transaction runs on, as libpq
    knows it (no round trip: the transaction's BEGIN has gone out)."""
    info = ztm.connection().raw.info
    return '%s:%s' % (info.host, info.port)


def lock_accounts(unit: Unit) -> Dict[int, Any]:
    """Lock the unit's two accounts, in id order (no deadlocks between
    workers), and return them by id."""
    low, high = sorted((unit.src, unit.dst))
    rows = Account.select(IN(Account.q.id, [low, high]),
                          orderBy=Account.q.id, forUpdate=True)
    return {row.id: row for row in rows}


def move(unit: Unit, rows: Dict[int, Any]) -> None:
    rows[unit.src].balance = rows[unit.src].balance - unit.amount
    rows[unit.dst].balance = rows[unit.dst].balance + unit.amount


def transfer(unit: Unit) -> None:
    """The whole unit, inside the current transaction."""
    rows = lock_accounts(unit)
    Transfer(uid=unit.uid, src=unit.src, dst=unit.dst, amount=unit.amount)
    move(unit, rows)
