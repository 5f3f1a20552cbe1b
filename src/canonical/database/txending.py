"""Transaction control, the ending half: COMMIT, PREPARE TRANSACTION,
COMMIT/ROLLBACK PREPARED and ROLLBACK, sent as SQL (see txcontrol.py for
why the library's connections run in psycopg2's autocommit mode).

Whether a transaction is open is libpq's transaction status, read without
a round trip.  A transaction that sent no statement sends nothing at its
end either.
"""

from __future__ import annotations

from typing import Optional

import psycopg2
import psycopg2.extensions

from canonical.database.interfaces import DisconnectionError
from canonical.database.interfaces import TransactionAbortedError
from canonical.database.positions import COMMIT_WITH_POSITION
from canonical.database.rawsql import Cursor
from canonical.database.rawsql import finish_prepared
from canonical.database.classify import server_message

__all__ = ['TransactionEnding']

_IDLE = psycopg2.extensions.TRANSACTION_STATUS_IDLE
_FAILED = psycopg2.extensions.TRANSACTION_STATUS_INERROR
_INTRANS = psycopg2.extensions.TRANSACTION_STATUS_INTRANS


class TransactionEnding:
    """The ending of ReconnectingConnection's transactions (see
    connection.py and txcontrol.py), as declared by IDatabaseConnection.

    It expects of the class it is mixed into: ``_raw``, ``_begin`` (the
    BEGIN still to send, if any), ``_control`` (the cursor for COMMIT and
    ROLLBACK, or None), ``_poller``, ``positions``, ``config``,
    ``death_reason()``, ``discard(reason)``, ``note_failure(error)`` and
    ``_forget_if_inherited()``.
    """

    # The cursor that sends COMMIT and ROLLBACK: one per connection rather
    # than a new one per transaction (see _control_cursor()).
    _control: Optional[Cursor] = None

    def commit(self) -> None:
        raw = self._raw
        # _open_or_nothing()'s usual answer, without the call (this runs in
        # every unit that sent a statement): statements went out, the
        # connection is alive and its transaction open and not failed.
        if self._begin is None and raw is not None and not raw.closed and \
                not self._poller.poll(0) and \
                raw.get_transaction_status() == _INTRANS or \
                self._open_or_nothing('COMMIT'):
            positions = self.positions
            cursor = self._control or self._control_cursor()
            if positions is None or not positions.tracking:
                cursor.execute('COMMIT')
                if positions is not None:
                    positions.untracked = True
                return
            # Read units on standbys wait for this position (see
            # standbys.py): it travels in COMMIT's own message.
            try:
                cursor.execute(COMMIT_WITH_POSITION)
            except BaseException:
                # It may have committed (a lost answer settled later, say):
                # the next read unit asks the primary its position.
                positions.untracked = True
                raise
            positions.note(cursor.fetchone()[0])

    def _control_cursor(self) -> Cursor:
        """The connection's cursor for transaction control statements,
        made at its first use.  It holds no rows (COMMIT and ROLLBACK
        return none), so one serves every transaction of the connection;
        it is forgotten with the connection (see _drop())."""
        cursor = self._control
        if cursor is None:
            cursor = self._control = self._raw.cursor()
        return cursor

    def prepare(self, gid: str) -> bool:
        if not self._open_or_nothing('PREPARE TRANSACTION'):
            return False
        self._raw.cursor().execute('PREPARE TRANSACTION %s', (gid,))
        return True

    def _open_or_nothing(self, verb: str) -> bool:
        """True when ``verb`` must be sent: statements went out and the
        transaction is still open.  A session the server already ended
        (terminated, timed out, shut down) rolled back: that is said for
        certain, rather than sending a statement whose failure would leave
        the outcome unknown."""
        if self._begin is not None:
            self._begin = None
            return False
        raw = self._raw
        # death_reason()'s healthy case, inline: this runs at every commit.
        reason = self.death_reason() if raw is None or raw.closed or \
            self._poller.poll(0) else None
        if reason is not None:
            self.discard(reason)
            raise self.note_failure(DisconnectionError(
                'The connection to %s was lost before %s (%s); nothing was '
                'committed.  Abort, then begin() and run the transaction '
                'again.' % (self.config.describe(), verb, reason)))
        status = raw.get_transaction_status()
        if status == _FAILED:
            # PostgreSQL would answer COMMIT (or PREPARE) with a rollback
            # and no error: a commit() that returned would be a lie.
            raise self.note_failure(TransactionAbortedError(
                'Cannot %s: a statement of this transaction failed earlier, '
                'so the database rolled it back and nothing was committed.  '
                'Call abort(); to go on after an expected error, run that '
                'statement inside a savepoint.' % verb))
        return status != _IDLE

    def finish_prepared(self, gid: str, commit: bool) -> None:
        if commit and self.positions is not None:
            # Its position (here, or where a retry finishes it) is asked
            # of the primary by the next read unit.
            self.positions.untracked = True
        finish_prepared(self._raw, gid, commit)

    def rollback(self) -> None:
        self._forget_if_inherited()
        self._begin = None
        raw = self._raw
        if raw is None:
            return
        if raw.closed:
            self.discard('the connection was closed')
            return
        if raw.get_transaction_status() == _IDLE:
            return
        try:
            self._control_cursor().execute('ROLLBACK')
        except psycopg2.Error as e:
            # Never hand a connection in an unknown state out again.
            self.discard(server_message(e))
