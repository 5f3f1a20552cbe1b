"""The two-phase bookkeeping of a database: prepared transactions still to
finish, and the once-per-process recovery of those dead processes left.

A COMMIT PREPARED that could not be done when it was decided (the database
stayed away longer than reconnect_timeout, say) keeps its locks until it
is: the ledger remembers it and the next begin() on a live connection
finishes it.  Connections only call the ledger; twophase.py holds the SQL
recipes.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Dict, Iterable

import psycopg2
import psycopg2.errors
from zope.interface import implementer

from canonical.database.classify import server_message
from canonical.database.interfaces import IDatabaseConfig
from canonical.database.interfaces import IPreparedTransactions
from canonical.database.perdatabase import PerDatabase
from canonical.database.twophase import recover_orphans
from canonical.database.rawsql import finish_prepared
from canonical.database.rawsql import rollback_quietly

__all__ = ['PreparedTransactions', 'prepared_for']

log = logging.getLogger('canonical.database.prepared')

# Decisions are kept after the transaction was finished: a standby that
# received the PREPARE but not the COMMIT PREPARED may be promoted later,
# and what it holds must then be finished the same way.  The oldest go
# first; a failover comes within seconds, not ten thousand transactions.
_DECISIONS_KEPT = 10000


@implementer(IPreparedTransactions)
class PreparedTransactions:
    """See IPreparedTransactions; one per database and process."""

    def __init__(self, config: IDatabaseConfig) -> None:
        self._lock = threading.Lock()
        self._pending: Dict[str, bool] = {}
        self._decided: Dict[str, bool] = {}
        self.has_pending = False
        self.recovered = False
        self.settled = 0
        self.orphans_recovered = 0
        self.deferred = 0
        self.deferred_finished = 0

    def defer(self, gid: str, commit: bool) -> None:
        with self._lock:
            self._pending[gid] = commit
            self.has_pending = True
            self.deferred += 1

    def decide(self, gid: str, commit: bool) -> None:
        with self._lock:
            self._decided.pop(gid, None)  # the newest decision goes last
            self._decided[gid] = commit
            while len(self._decided) > _DECISIONS_KEPT:
                self._decided.pop(next(iter(self._decided)))

    def adopt(self, gids: Iterable[str]) -> None:
        for gid in gids:
            with self._lock:
                commit = self._decided.get(gid)
                if commit is None or gid in self._pending:
                    # Not decided: a thread of ours is still preparing it.
                    continue
            log.warning('Prepared transaction %s of this process is still '
                        'there; it will be %s at the next begin().', gid,
                        'committed' if commit else 'rolled back')
            self.defer(gid, commit)

    def pending(self) -> Dict[str, bool]:
        if not self._pending:
            return {}  # every begin() asks: no lock when there is nothing
        with self._lock:
            return dict(self._pending)

    def note_settled(self) -> None:
        with self._lock:
            self.settled += 1

    def finish_pending(self, raw: Any) -> None:
        for gid, commit in self.pending().items():
            if self._finish_one(raw, gid, commit):
                with self._lock:
                    self._pending.pop(gid, None)
                    self.has_pending = bool(self._pending)
                    self.deferred_finished += 1

    @staticmethod
    def _finish_one(raw: Any, gid: str, commit: bool) -> bool:
        try:
            finish_prepared(raw, gid, commit)
        except psycopg2.errors.UndefinedObject:
            return True  # finished already, by us or by recovery
        except psycopg2.Error as e:
            log.error('Prepared transaction %s is still not finished: %s',
                      gid, server_message(e))
            return False
        log.info('%s prepared transaction %s.',
                 'Committed' if commit else 'Rolled back', gid)
        return True

    def recover_orphans(self, raw: Any) -> None:
        # Once per process and database, on the first connection: one
        # round trip.  Marked done first, so a failure is not retried on
        # every connect (it is logged).
        with self._lock:
            if self.recovered:
                return
            self.recovered = True
        try:
            done = recover_orphans(raw)
        except psycopg2.Error as e:
            log.error('Recovery of prepared transactions failed: %s',
                      server_message(e))
            rollback_quietly(raw)
            return
        with self._lock:
            self.orphans_recovered += len(done)


# The process's ledger for a configuration's database.
prepared_for: PerDatabase[PreparedTransactions] = PerDatabase(
    PreparedTransactions)
