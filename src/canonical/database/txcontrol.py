"""Transaction control: BEGIN travels in the same message as the
transaction's first statement.

Why the library sends BEGIN itself
----------------------------------
In its default mode psycopg2 opens every transaction with a BEGIN of its
own, one round trip before the first statement, and has no public way to
be told that a transaction is already open.  A healthy transaction then
costs three round trips: BEGIN, the statement, COMMIT.  So the library's
psycopg2 connections run in autocommit mode and this module sends the
transaction control itself:

* ``begin()`` sends nothing.  The first statement goes out as one Query
  message, ``BEGIN ISOLATION LEVEL ...; <statement>``; the simple query
  protocol runs both and psycopg2's cursor keeps the statement's result.
  A healthy transaction costs two round trips (the statement, COMMIT),
  three when it commits in two phases (PREPARE TRANSACTION, COMMIT
  PREPARED).  The isolation level is always named, so a server whose
  default_transaction_isolation differs changes nothing.
* COMMIT, ROLLBACK, PREPARE TRANSACTION and COMMIT/ROLLBACK PREPARED are
  SQL sent from here.  Whether a transaction is open is libpq's
  transaction status (no round trip), not psycopg2's bookkeeping, which
  knows nothing of a BEGIN it did not send.  psycopg2's own commit(),
  rollback() and tpc_*() methods must not be used on these connections:
  in autocommit mode they do nothing, or refuse.
* A transaction that sends no statement sends nothing at all: no BEGIN,
  no COMMIT, no PREPARE.
* When the first statement finds the link dead, nothing of the transaction
  can have committed: the connection is made again (waiting through an
  outage as begin() does, one probe per process) and BEGIN with that
  statement is sent once more.  Once a statement has gone through, nothing
  is ever sent twice: a disconnection raises DisconnectionError.
  Autocommit mode never replays (each statement may have committed), and
  neither does a replayed statement whose new connection dies too: it may
  be what kills it.
* A message that does not parse runs nothing, its BEGIN included.  So that
  the transaction ends up open and aborted, as when BEGIN travels alone,
  BEGIN and the statement are then sent apart: two more round trips, on
  that error path only.

Raw access (``raw``, ``cursor(name)``) is explained in rawsql.py.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Optional

import psycopg2
import psycopg2.extensions
from sqlobject import dberrors

from canonical.database.classify import is_disconnect
from canonical.database.classify import is_read_only_error
from canonical.database.classify import server_message
from canonical.database.classify import translate_error
from canonical.database.classify import with_sqlstate
from canonical.database.stats import failure_kind
from canonical.database.interfaces import DisconnectionError
from canonical.database.interfaces import IDatabaseConfig
from canonical.database.interfaces import ReadOnlyServerError
from canonical.database.interfaces import TransactionAbortedError
from canonical.database.positions import COMMIT_WITH_POSITION
from canonical.database.positions import CommitPositions
from canonical.database.rawsql import Cursor
from canonical.database.rawsql import DeclaredCursor
from canonical.database.rawsql import Query
from canonical.database.rawsql import RawConnection
from canonical.database.rawsql import begin_statement
from canonical.database.rawsql import finish_prepared
from canonical.database.rawsql import rollback_quietly
from canonical.database.rawsql import with_begin

__all__ = ['TransactionControl']

log = logging.getLogger('canonical.database.connection')

_IDLE = psycopg2.extensions.TRANSACTION_STATUS_IDLE
_FAILED = psycopg2.extensions.TRANSACTION_STATUS_INERROR
_DRIVER_ERRORS = (psycopg2.Error, dberrors.Error)

_NOT_CONNECTED = ('No database connection in this thread: call begin() first '
                  '(after abort(), when a transaction was cut off).')

_GONE = ('The database connection of this thread is gone; abort() and '
         'begin() again.')


class TransactionControl:
    """The statement half of ReconnectingConnection (see connection.py):
    beginning, statements, commit, rollback and two-phase commit, as
    declared by IDatabaseConnection.

    It expects of the class it is mixed into: ``_raw`` (the psycopg2
    connection or None), ``prepared``, ``death_reason()``, ``_fit_as_is(raw)``,
    ``_unusable(raw)``,
    ``ensure_connected()``, ``discard(reason)``,
    and ``_inherited()`` / ``_forget_if_inherited()`` for a connection
    opened before fork() (see forksafety); for resolve_commit_outcome,
    ``outcomes``, ``outcome_slot`` and ``_new_token()`` (see outcomes.py).
    It counts into ``stats`` (an IDatabaseStats) and notes the kind of
    the first error of a unit in ``unit_failure``.
    """

    _raw: Optional[RawConnection] = None
    _begin: Optional[str] = None  # the BEGIN still to send, if any
    _begin_sql: Optional[str] = None  # the BEGIN of the configuration
    _writes = False  # config.writes, asked once per configuration
    # The cursor that sends COMMIT and ROLLBACK: one per connection rather
    # than a new one per transaction (see _control_cursor()).
    _control: Optional[Cursor] = None
    outcome_slot: Optional[str] = None
    outcome_token: Optional[str] = None
    replays = 0
    # This process's commit positions (standbys.py); None for a reader.
    positions: Optional[CommitPositions] = None
    unit_failure: Optional[str] = None

    def set_config(self, config: IDatabaseConfig) -> None:
        """Use ``config`` (another isolation level, say) from the next
        begin() on; the connection itself is kept."""
        self.config = config
        self._begin_sql = begin_statement(config.isolation)
        self._writes = config.writes
        self.autocommit = self._begin_sql is None

    # -- beginning ---------------------------------------------------------

    def begin(self) -> RawConnection:
        self._begin = None
        self.unit_failure = None
        raw = self._raw
        if raw is None or not self._fit_as_is(raw):
            # Not the healthy connection it usually is: look closer.
            raw = self._usable_connection()
        if raw.get_transaction_status() != _IDLE or self.prepared.pending():
            self._make_ready(raw)
        if self.outcome_slot is None:
            # No commit outcome marker: the configuration's BEGIN as it is.
            self.outcome_token = None
            self._begin = self._begin_sql
        else:
            self.outcome_token = self._new_token()
            self._begin = self._opening()
        return raw

    def _opening(self) -> Optional[str]:
        """The BEGIN to send with the first statement; with the commit
        outcome marker in the same message when the connection has a slot
        (resolve_commit_outcome, see outcomes.py): no round trip of its
        own, and its row lock held from the transaction's start."""
        begin = self._begin_sql
        if begin is None or self.outcome_token is None or \
                self.outcome_slot is None:
            return begin
        return begin + '; ' + self.outcomes.marker(self.outcome_slot,
                                                   self.outcome_token)

    def _usable_connection(self) -> RawConnection:
        """A live connection to a server fit for the transaction, waiting
        through an outage, and leaving servers that are not (see
        ReconnectingConnection._unusable)."""
        raw = self.ensure_connected()
        reason = self._unusable(raw)
        while reason is not None:
            self.discard(reason)
            raw = self.ensure_connected()
            reason = self._unusable(raw)
        return raw

    def _make_ready(self, raw: RawConnection) -> None:
        if raw.get_transaction_status() != _IDLE:
            # Left in a transaction by someone using raw directly.
            rollback_quietly(raw)
        if self.prepared.pending():
            # A decided two-phase commit holds its locks until done.
            self.prepared.finish_pending(raw)

    # -- statements --------------------------------------------------------

    def run(self, operation: Callable[..., Any], *args: Any) -> Any:
        raw = self._raw
        if raw is None:
            raise DisconnectionError(_NOT_CONNECTED)
        begin = self._begin
        try:
            return operation(raw, *args)
        except _DRIVER_ERRORS as e:
            if self._lost(e):
                if self._inherited():
                    # Opened before fork(): the parent's, silenced here.
                    raise DisconnectionError(_GONE) from None
                if self._begin is None:
                    raise self._lost_now(e) from e
                raw = self._replay(begin, server_message(e))
            elif begin is not None and self._refused_write(e):
                # The first statement met a server that no longer takes
                # writes: only its BEGIN ran with it, so nothing of the
                # transaction did.  Send it again on a writable server.
                raw = self._replay(begin, 'the server refused a write: %s'
                                   % server_message(e))
            else:
                raise self.statement_error(e)
        try:
            return operation(raw, *args)
        except _DRIVER_ERRORS as e:
            if not self._lost(e):
                raise self.statement_error(e)
            raise self._lost_now(e) from e

    def _lost_now(self, error: BaseException) -> DisconnectionError:
        # Dropped at once, with the reason: a host that timed out is then
        # suspect before the next attempt (see hosts.py), instead of being
        # tried first again.
        self.discard(server_message(error))
        return self.lost_in_transaction(error)

    def note_failure(self, error: BaseException) -> BaseException:
        if self.unit_failure is None:
            self.unit_failure = failure_kind(error)
        return error

    def statement_error(self, error: BaseException) -> BaseException:
        """What to raise for a statement's ``error`` that did not cost the
        link: the error itself with its SQLSTATE, or, when a writer meets a
        server that became read-only, ReadOnlyServerError."""
        if not self._refused_write(error):
            return self.note_failure(with_sqlstate(error, error))
        # A fence or a demotion: this session cannot write again.  A
        # server's report can be stale behind a pooler (PgBouncer tells a
        # client only of changes seen while it was linked), so the error
        # itself decides.
        self.discard('the server refused a write: %s' % server_message(error))
        failure = ReadOnlyServerError(
            '%s\n(%s does not accept writes any more: a standby, or a primary '
            'fenced or demoted.  Nothing of the transaction was committed; '
            'call abort(), then begin() waits for a writable server and the '
            'transaction can run again.)'
            % (server_message(error), self.config.describe()))
        failure.__cause__ = error
        return self.note_failure(with_sqlstate(failure, error))

    def _refused_write(self, error: BaseException) -> bool:
        return self._writes and is_read_only_error(error)

    def _lost(self, error: BaseException) -> bool:
        return not isinstance(error, DisconnectionError) and \
            is_disconnect(error, self._raw)

    def _replay(self, begin: str, reason: str) -> RawConnection:
        # Nothing of the transaction ran (see run()).  The new connection
        # has a slot of its own: the marker is made anew.
        self._begin = None
        self.discard(reason)
        raw = self._usable_connection()
        self._make_ready(raw)
        self._begin = self._opening()
        self.replays += 1
        self.stats.replays += 1
        log.info('Sending the first statement of the transaction again, on '
                 'the new connection.')
        return raw

    def send(self, execute: Callable[..., Any], query: Optional[Query],
             *args: Any) -> Any:
        begin = self._begin
        if begin is None:
            return execute(query, *args)
        try:
            if type(query) is str and query:
                # with_begin(), inline for the usual query.
                result = execute(begin + '; ' + query, *args)
            else:
                result = execute(with_begin(begin, query), *args)
        except Exception as e:
            raw = self._raw
            if is_disconnect(e, raw):
                raise  # BEGIN still to send: run() replays
            if raw.get_transaction_status() != _IDLE:
                # BEGIN ran and the statement failed: the transaction is
                # open and aborted.
                self._begin = None
                raise
            # Nothing ran: the message did not parse, or was refused
            # before it was sent.  Send them apart, as a separate BEGIN
            # would have been, so the transaction is open (and aborted).
            raw.cursor().execute(begin)
            self._begin = None
            return execute(query, *args)
        self._begin = None
        return result

    def execute(self, query: Query, params: Any = None) -> Cursor:
        return self.run(self._execute, query, params)

    def _execute(self, raw: RawConnection, query: Query,
                 params: Any) -> Cursor:
        cursor = raw.cursor()
        try:
            self.send(cursor.execute, query, params)
        except psycopg2.Error as e:
            if is_disconnect(e, raw):
                raise
            # The same exceptions as statements run through SQLObject.
            raise translate_error(e) from e
        return cursor

    # -- raw access --------------------------------------------------------

    @property
    def raw(self) -> Optional[RawConnection]:
        if self._begin is not None:
            self.run(self._send_begin)
        return self._raw

    def _send_begin(self, raw: RawConnection) -> None:
        self.send(raw.cursor().execute, None)

    def cursor(self, name: Optional[str] = None,
               scrollable: Optional[bool] = None) -> Cursor:
        raw = self.raw
        if raw is None:
            raise DisconnectionError(_NOT_CONNECTED)
        if name is None:
            return raw.cursor()
        return raw.cursor(name, cursor_factory=DeclaredCursor,
                          scrollable=scrollable)

    @property
    def backend_pid(self) -> Optional[int]:
        raw = self._raw
        if raw is None or raw.closed:
            return None
        return raw.info.backend_pid

    # -- ending ------------------------------------------------------------

    def commit(self) -> None:
        if self._open_or_nothing('COMMIT'):
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

    def lost_in_transaction(self, error: BaseException) -> DisconnectionError:
        return self.note_failure(with_sqlstate(DisconnectionError(
            '%s\n(The connection to %s was lost during a transaction; nothing '
            'of it was committed.  Call abort(), then begin() and run it '
            'again.)' % (server_message(error), self.config.describe())),
            error))
