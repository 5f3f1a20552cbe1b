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
from canonical.database.positions import CommitPositions
from canonical.database.rawsql import Cursor
from canonical.database.rawsql import DeclaredCursor
from canonical.database.rawsql import Query
from canonical.database.rawsql import RawConnection
from canonical.database.rawsql import begin_statement
from canonical.database.rawsql import rollback_quietly
from canonical.database.rawsql import with_begin
from canonical.database.txending import TransactionEnding

__all__ = ['TransactionControl']

log = logging.getLogger('canonical.database.connection')

_IDLE = psycopg2.extensions.TRANSACTION_STATUS_IDLE
_DRIVER_ERRORS = (psycopg2.Error, dberrors.Error)

_NOT_CONNECTED = ('No database connection in this thread: call begin() first '
                  '(after abort(), when a transaction was cut off).')

_GONE = ('The database connection of this thread is gone; abort() and '
         'begin() again.')


class TransactionControl(TransactionEnding):
    """The statement half of ReconnectingConnection (see connection.py):
    beginning, statements, commit, rollback and two-phase commit, as
    declared by IDatabaseConnection.

    It expects of the class it is mixed into: ``_raw`` (the psycopg2
    connection or None), ``prepared``, ``death_reason()``, ``_unusable(raw)``,
    ``_poller`` (a select.poll() of its socket), ``_info`` (its
    ``raw.info``), ``_servers`` and ``_timelines_seen`` (see begin()),
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
        # The usual case, told with no round trip and no call (this runs in
        # every unit): nothing arrived on the connection since its last
        # answer (see death_reason()), this process followed no failover
        # since its server was judged, and a writer's server still takes
        # writes.  Only default_transaction_read_only can change under a
        # live session: a primary becomes a hot standby only by restarting,
        # which ends every session (in_hot_standby is checked when a
        # connection is made, and by _unusable()).
        if raw is None or raw.closed or self._poller.poll(0) or \
                self._servers.timeline_changes != self._timelines_seen or \
                (self._writes and self._info.parameter_status(
                    'default_transaction_read_only') == 'on'):
            # Not the healthy connection it usually is: look closer.
            raw = self._usable_connection()
        if raw.get_transaction_status() != _IDLE or self.prepared.has_pending:
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
            return self._run_failed(e, begin, operation, args)

    def _run_failed(self, error: BaseException, begin: Optional[str],
                    operation: Callable[..., Any], args: tuple) -> Any:
        """run() once ``operation`` raised ``error``, ``begin`` being the
        BEGIN that was to go with it: the operation sent once more on a new
        connection when nothing of the transaction ran, else the error."""
        if self._lost(error):
            if self._inherited():
                # Opened before fork(): the parent's, silenced here.
                raise DisconnectionError(_GONE) from None
            if self._begin is None:
                raise self._lost_now(error) from error
            raw = self._replay(begin, server_message(error))
        elif begin is not None and self._refused_write(error):
            # The first statement met a server that no longer takes
            # writes: only its BEGIN ran with it, so nothing of the
            # transaction did.  Send it again on a writable server.
            raw = self._replay(begin, 'the server refused a write: %s'
                               % server_message(error))
        else:
            raise self.statement_error(error)
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
            return self._send_failed(e, begin, execute, query, args)
        self._begin = None
        return result

    def _send_failed(self, error: Exception, begin: str,
                     execute: Callable[..., Any], query: Optional[Query],
                     args: tuple) -> Any:
        """send() once ``begin`` and ``query`` failed as one message."""
        raw = self._raw
        if is_disconnect(error, raw):
            raise error  # BEGIN still to send: run() replays
        if raw.get_transaction_status() != _IDLE:
            # BEGIN ran and the statement failed: the transaction is open
            # and aborted.
            self._begin = None
            raise error
        # Nothing ran: the message did not parse, or was refused before it
        # was sent.  Send them apart, as a separate BEGIN would have been,
        # so the transaction is open (and aborted).
        raw.cursor().execute(begin)
        self._begin = None
        return execute(query, *args)

    def execute(self, query: Query, params: Any = None) -> Cursor:
        raw = self._raw
        if raw is None or type(query) is not str or not query:
            return self.run(self._execute, query, params)
        # run(), _execute() and send() folded into one frame for the usual
        # statement (this runs in every unit); their error handling is
        # theirs, from the point the statement failed.
        begin = self._begin
        cursor = None
        try:
            cursor = raw.cursor()
            if begin is None:
                cursor.execute(query, params)
            else:
                cursor.execute(begin + '; ' + query, params)
                self._begin = None
        except Exception as e:
            return self._execute_failed(e, raw, cursor, begin, query, params)
        return cursor

    def _execute_failed(self, error: Exception, raw: RawConnection,
                        cursor: Optional[Cursor], begin: Optional[str],
                        query: str, params: Any) -> Cursor:
        """execute() once its statement raised ``error``: as if it had gone
        through run(), _execute() and send()."""
        try:
            try:
                if cursor is None or begin is None:
                    raise error
                self._send_failed(error, begin, cursor.execute, query,
                                  (params,))
            except psycopg2.Error as e:
                if is_disconnect(e, raw):
                    raise
                raise translate_error(e) from e
            return cursor
        except _DRIVER_ERRORS as e:
            return self._run_failed(e, begin, self._execute, (query, params))

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

    def lost_in_transaction(self, error: BaseException) -> DisconnectionError:
        return self.note_failure(with_sqlstate(DisconnectionError(
            '%s\n(The connection to %s was lost during a transaction; nothing '
            'of it was committed.  Call abort(), then begin() and run it '
            'again.)' % (server_message(error), self.config.describe())),
            error))
