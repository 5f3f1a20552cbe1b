"""Commit outcomes that stay exact across failover: a marker row written by
the transaction itself.

With ``resolve_commit_outcome`` every connection of a writer has a *slot*,
a row of ``zopeless_commit_outcome`` made when it connects.  Each
transaction writes a token of its own (a gid) into its slot, and that write
travels with the transaction's BEGIN, which travels with its first
statement (``BEGIN ...; INSERT ... ON CONFLICT ...; <the statement>`` in
one message, see txcontrol.py): no extra round trip.  The row then
replicates, commits, or is lost together with the transaction, and its row
lock is held from the transaction's start to its end:

* after a COMMIT whose answer was lost, reading the slot with ``FOR
  SHARE`` waits while the old session still has the transaction open,
  then tells exactly whether it committed *on the server the library now
  talks to*, even when that is a standby promoted meanwhile that never
  received it;
* while the old session holds the lock, its backend is found from the
  row's ``xmax`` in the current server's own ``pg_stat_activity``, never
  from a pid libpq reported (PgBouncer invents one; after a failover it
  belongs to another server), and terminated after a grace period.

TCP delivers a session's messages in order: a COMMIT that arrived was
preceded by the marked BEGIN, so no COMMIT can land unseen.  Reading
``raw`` sends the BEGIN, the marker with it; a transaction that sent
nothing commits nothing and has no outcome to look up.

Slot names are gids (``twophase.new_gid()``), so the slots of processes
that died are recognised and removed like their prepared transactions.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

import psycopg2
import psycopg2.errors
from zope.interface import implementer

from canonical.database.classify import server_message
from canonical.database.interfaces import ICommitOutcomes
from canonical.database.interfaces import IDatabaseConfig
from canonical.database.perdatabase import PerDatabase
from canonical.database.twophase import new_gid
from canonical.database.twophase import orphaned_gids
from canonical.database.twophase import this_host_prefix
from canonical.database.rawsql import rollback_quietly

__all__ = ['CommitOutcomes', 'outcomes_for', 'TABLE', 'CREATE_SQL']

log = logging.getLogger('canonical.database.outcomes')

TABLE = 'zopeless_commit_outcome'
CREATE_SQL = ('CREATE TABLE IF NOT EXISTS %s (slot text PRIMARY KEY, '
              'gid text NOT NULL)' % TABLE)
_SAFE = re.compile(r'^[A-Za-z0-9.:-]+$')

# How long a lookup waits for the old session's row lock at a time, and
# how long the old session may keep it before it is terminated.
_LOCK_WAIT = '500ms'
_GRACE = 1.0


def _literal(value: str) -> str:
    # Slots and gids are our own names; checked, they need no escaping
    # (and carry no '%' that psycopg2 would take for a placeholder).
    if not _SAFE.match(value):
        raise ValueError('unexpected name %r' % value)
    return "'%s'" % value


@implementer(ICommitOutcomes)
class CommitOutcomes:
    """See ICommitOutcomes; one per database and process."""

    def __init__(self, config: IDatabaseConfig) -> None:
        self._lock = threading.Lock()
        self._ready = False
        self.available: Optional[bool] = None  # not known yet
        self._retired: List[str] = []
        self._held: Dict[str, int] = {}
        self.lookups = 0
        self.terminated = 0

    # -- slots ---------------------------------------------------------------

    def open_slot(self, raw: Any) -> Optional[str]:
        if self.available is False:
            return None
        slot = new_gid()
        with self._lock:
            # A slot whose transaction is being settled stays, whatever
            # became of its connection.
            retired = [s for s in self._retired if s not in self._held]
            self._retired = [s for s in self._retired if s in self._held]
            first = not self._ready
        if first:
            if not self._ensure_table(raw):
                return None
            retired += self._dead_slots(raw)
        try:
            done = self._insert_slot(raw, slot, retired)
        except psycopg2.errors.UndefinedTable:
            # A server this process meets after a failover may lack the
            # table: a standby promoted before its creation replicated.
            if not self._ensure_table(raw):
                return None
            done = self._insert_slot(raw, slot, retired)
        left = set(retired) - {row[0] for row in done or ()}
        with self._lock:
            self._ready = self.available = True
            self._retired.extend(left)
        return slot

    def _insert_slot(self, raw: Any, slot: str, retired: List[str]) -> Any:
        statements = ['INSERT INTO %s (slot, gid) VALUES (%s, %s)'
                      % (TABLE, _literal(slot), _literal(slot))]
        if retired:
            # SKIP LOCKED: a slot an old session still holds is retired
            # again, next time.
            statements.append(
                'DELETE FROM %s WHERE slot IN (SELECT slot FROM %s WHERE '
                'slot = ANY(ARRAY[%s]) FOR UPDATE SKIP LOCKED) RETURNING slot'
                % (TABLE, TABLE, ', '.join(_literal(s) for s in retired)))
        # One message, an implicit transaction: a failure runs none of it.
        return self._run(raw, '; '.join(statements), fetch=bool(retired))

    def retire(self, slot: Optional[str]) -> None:
        if slot is not None:
            with self._lock:
                self._retired.append(slot)

    def hold(self, slot: Optional[str]) -> None:
        if slot is not None:
            with self._lock:
                self._held[slot] = self._held.get(slot, 0) + 1

    def release(self, slot: Optional[str]) -> None:
        with self._lock:
            count = self._held.pop(slot, 0) - 1
            if count > 0:
                self._held[slot] = count

    def marker(self, slot: str, gid: str) -> str:
        return ('INSERT INTO %s (slot, gid) VALUES (%s, %s) ON CONFLICT '
                '(slot) DO UPDATE SET gid = EXCLUDED.gid'
                % (TABLE, _literal(slot), _literal(gid)))

    @staticmethod
    def _run(raw: Any, sql: str, fetch: bool = False) -> Any:
        # ``raw`` is a library connection: autocommit, idle.
        cursor = raw.cursor()
        cursor.execute(sql)
        return cursor.fetchall() if fetch else None

    def _ensure_table(self, raw: Any) -> bool:
        exists = self._run(
            raw, "SELECT to_regclass('%s') IS NOT NULL" % TABLE, fetch=True)
        if exists[0][0]:
            return True
        try:
            self._run(raw, CREATE_SQL)
        except (psycopg2.errors.UniqueViolation,
                psycopg2.errors.DuplicateTable,
                psycopg2.errors.DuplicateObject):
            # Another session created it at the same moment (its row type
            # or its catalog rows): IF NOT EXISTS does not guard that.
            return True
        except psycopg2.errors.InsufficientPrivilege as e:
            # Outcomes are then settled with PREPARE and the server's
            # timeline, as exactly as that allows: across a failover to a
            # standby that may lack the transaction, an honest "unknown".
            self.available = False
            log.warning(
                'resolve_commit_outcome: the table %s is missing and this '
                'role may not create it (%s); commit outcomes cannot be told '
                'across a failover.  Create it once as its owner: %s; GRANT '
                'SELECT, INSERT, UPDATE, DELETE ON %s TO <role>.',
                TABLE, server_message(e), CREATE_SQL, TABLE)
            return False
        return True

    def _dead_slots(self, raw: Any) -> List[str]:
        # No parameters: the % of the pattern goes to the server as is.
        rows = self._run(raw, "SELECT slot FROM %s WHERE slot LIKE '%s%%'"
                         % (TABLE, this_host_prefix()), fetch=True)
        return orphaned_gids(row[0] for row in rows)

    # -- looking an outcome up ---------------------------------------------

    def lookup(self, raw: Any, slot: str, gid: str,
               deadline: float) -> Tuple[bool, Optional[bool]]:
        """(prepared, committed) for ``gid`` written into ``slot``; see
        ICommitOutcomes.lookup."""
        self.lookups += 1
        held_since = None
        while True:
            cursor = raw.cursor()
            cursor.execute('SELECT EXISTS (SELECT 1 FROM pg_prepared_xacts '
                           'WHERE gid = %s)', (gid,))
            if cursor.fetchone()[0]:
                return True, None
            try:
                # One message: the lock wait is bounded, the lock held no
                # longer than the lookup.
                cursor.execute(
                    "BEGIN; SET LOCAL lock_timeout = '%s'; SELECT gid FROM "
                    "%s WHERE slot = %%s FOR SHARE" % (_LOCK_WAIT, TABLE),
                    (slot,))
                row = cursor.fetchone()
                cursor.execute('COMMIT')
                # No slot at all: it was made before the transaction, so
                # a server without it has not got the transaction either.
                return False, row is not None and row[0] == gid
            except psycopg2.errors.UndefinedTable:
                # A server that never had the table has not got the slot.
                rollback_quietly(raw)
                return False, False
            except psycopg2.errors.LockNotAvailable:
                rollback_quietly(raw)
            # The old session still has the transaction open.
            now = time.monotonic()
            held_since = held_since or now
            if now > deadline:
                return False, None
            if now - held_since >= _GRACE:
                self._terminate_holder(raw, slot)

    def _terminate_holder(self, raw: Any, slot: str) -> None:
        cursor = raw.cursor()
        # The pid comes from this server's own view of its backends.
        cursor.execute(
            'SELECT pg_terminate_backend(a.pid) FROM pg_stat_activity a, '
            '%s o WHERE o.slot = %%s AND a.backend_xid = o.xmax AND '
            'a.pid <> pg_backend_pid()' % TABLE, (slot,))
        if cursor.fetchall():
            self.terminated += 1
            log.warning('Terminated the session still holding transaction '
                        'slot %s.', slot)


# The process's outcome bookkeeping for a configuration's database.
outcomes_for: PerDatabase[CommitOutcomes] = PerDatabase(CommitOutcomes)
