"""The reconnecting connection: one thread's link to the database.

Healthy transactions pay nothing for the reconnection logic: begin() does
one poll() system call (the operating system already knows when the peer
closed the socket) and sends the BEGIN that a transaction needs anyway.
Only when that BEGIN fails because the link died, which means nothing of
the transaction has run, is the connection re-established and the BEGIN
sent again.  Statements after the BEGIN are never replayed.
"""

from __future__ import annotations

import logging
import select
import socket
import time
from typing import Any, Dict, Optional

import psycopg2
import psycopg2.extensions
from zope.interface import implementer

from canonical.database.classify import is_disconnect
from canonical.database.classify import is_read_only_error
from canonical.database.classify import server_message
from canonical.database.classify import translate_error
from canonical.database.classify import with_sqlstate
from canonical.database.interfaces import DisconnectionError
from canonical.database.interfaces import IDatabaseConfig
from canonical.database.interfaces import IDatabaseConnection
from canonical.database.interfaces import IDatabaseServers
from canonical.database.interfaces import IPreparedTransactions
from canonical.database.interfaces import IReconnectCoordinator
from canonical.database.interfaces import ReadOnlyServerError
from canonical.database.isolation import AUTOCOMMIT_ISOLATION
from canonical.database.hosts import servers_for
from canonical.database.prepared import prepared_for
from canonical.database.reconnect import coordinator_for
from canonical.database.twophase import rollback_quietly

__all__ = ['ReconnectingConnection']

log = logging.getLogger('canonical.database.connection')

_PSYCOPG2_ISOLATION = {
    'read_committed': psycopg2.extensions.ISOLATION_LEVEL_READ_COMMITTED,
    'repeatable_read': psycopg2.extensions.ISOLATION_LEVEL_REPEATABLE_READ,
    'serializable': psycopg2.extensions.ISOLATION_LEVEL_SERIALIZABLE,
}

RawConnection = psycopg2.extensions.connection
_READY = psycopg2.extensions.STATUS_READY
_POLL_MASK = select.POLLIN | select.POLLPRI


def _peer_has_closed(raw: RawConnection) -> Optional[str]:
    """Why ``raw`` is dead, judged from what already sits in its socket, or
    None when it is (as far as the kernel knows) alive.

    Called only when poll() says the idle socket is readable: an EOF or a
    FATAL error message (backend terminated) means dead; a NOTIFY, NOTICE
    or parameter status means alive.
    """
    try:
        sock = socket.socket(fileno=raw.fileno())
    except OSError as e:
        return 'socket unusable: %s' % e.strerror
    try:
        first = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return None
    except OSError as e:
        return 'socket error: %s' % (e.strerror or e)
    finally:
        sock.detach()  # the descriptor belongs to libpq
    if first == b'':
        return 'the server closed the connection'
    if first == b'E':
        return 'the server ended the session (backend terminated)'
    return None


def reported_read_only(raw: RawConnection) -> Optional[bool]:
    """Whether the server of ``raw`` said it does not take writes: True, or
    False, or None when it says nothing (servers before PostgreSQL 14, and
    poolers that do not pass the report on).

    PostgreSQL 14 and later report in_hot_standby and
    default_transaction_read_only to the client whenever they change, with
    the answer to the next statement: no round trip is needed to know.
    """
    standby = raw.info.parameter_status('in_hot_standby')
    fenced = raw.info.parameter_status('default_transaction_read_only')
    if standby is None and fenced is None:
        return None
    return 'on' in (standby, fenced)


@implementer(IDatabaseConnection)
class ReconnectingConnection:
    """See IDatabaseConnection; an adapter from IDatabaseConfig."""

    def __init__(self, config: IDatabaseConfig) -> None:
        self.config = config
        self.raw: Optional[RawConnection] = None
        self._coordinator: IReconnectCoordinator = coordinator_for(config)
        self._servers: IDatabaseServers = servers_for(config)
        self.prepared: IPreparedTransactions = prepared_for(config)
        self._poller: Any = None
        self._isolation: Optional[str] = None
        self._lost = False  # a connection was discarded since the last one
        self.reconnects = 0

    # -- connecting --------------------------------------------------------

    def death_reason(self) -> Optional[str]:
        """Why the connection is known dead without a round trip, or None.

        One poll() system call; the socket is only peeked at when the
        kernel says something arrived while we were not reading.
        """
        raw = self.raw
        if raw is None:
            return 'not connected'
        if raw.closed:
            return 'the connection was closed'
        if self._poller.poll(0):
            return _peer_has_closed(raw)
        return None

    def ensure_connected(self) -> RawConnection:
        if self.raw is None:
            return self._connect(lost=self._lost)
        reason = self.death_reason()
        if reason is None:
            return self.raw
        self.discard(reason)
        return self._connect(lost=True)

    def _connect(self, lost: bool) -> RawConnection:
        timeout = self.config.reconnect_timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        started = time.monotonic()
        raw = self._coordinator.connect(self.config, deadline,
                                        reason='lost' if lost else None)
        self._isolation = None
        self.raw = raw
        self._poller = select.poll()
        self._poller.register(raw.fileno(), _POLL_MASK)
        self._apply_isolation(raw)
        self.prepared.recover_orphans(raw)
        self._lost = False
        if lost:
            self.reconnects += 1
            log.info('Reconnected to %s in %.3f s.', self.config.describe(),
                     time.monotonic() - started)
        return raw

    def finish_deferred_now(self) -> Dict[str, bool]:
        """Finish deferred prepared transactions on the live connection, if
        there is one, without waiting; return those still unfinished."""
        if self.prepared.pending() and self.death_reason() is None:
            rollback_quietly(self.raw)
            self.prepared.finish_pending(self.raw)
        return self.prepared.pending()

    def _apply_isolation(self, raw: RawConnection) -> None:
        level = self.config.isolation
        if level == self._isolation:
            return
        if level == AUTOCOMMIT_ISOLATION:
            raw.autocommit = True
        else:
            # Sent with the next BEGIN: no round trip of its own.
            raw.set_session(isolation_level=_PSYCOPG2_ISOLATION[level],
                            autocommit=False)
        self._isolation = level

    def set_config(self, config: IDatabaseConfig) -> None:
        """Use ``config`` (another isolation level, say) from the next
        begin() on; the connection itself is kept."""
        self.config = config

    # -- transactions ------------------------------------------------------

    @property
    def autocommit(self) -> bool:
        return self.config.isolation == AUTOCOMMIT_ISOLATION

    def begin(self, gid: Optional[str]) -> RawConnection:
        while True:
            raw = self.ensure_connected()
            server = getattr(raw, 'server', None)
            if server is not None and self._servers.is_stale(server):
                # Reached before a failover this process has since followed:
                # a demoted primary, whatever it still accepts.
                self.discard('the server is a demoted primary (timeline %s '
                             'was followed by a later one)' % server.timeline)
                continue
            if raw.status != _READY:
                # Left in a transaction by someone using raw directly.
                rollback_quietly(raw)
            if self.prepared.pending():
                # A decided two-phase commit holds its locks until done.
                self.prepared.finish_pending(raw)
            self._apply_isolation(raw)
            if self.autocommit or gid is None:
                return raw
            try:
                raw.tpc_begin(gid)  # sends BEGIN: the transaction's first
            except psycopg2.Error as e:   # statement, safe to send again
                if not is_disconnect(e, raw):
                    raise
                self.discard(server_message(e))
                continue
            if self.config.writes and reported_read_only(raw):
                # Fenced or demoted since we connected: the answer to BEGIN
                # says so.  Nothing has run yet; find a writable server.
                self.discard('the server no longer accepts writes')
                continue
            return raw

    def rollback(self) -> None:
        """Roll back what is in progress, keeping a healthy connection."""
        raw = self.raw
        if raw is not None:
            rollback_quietly(raw)

    def execute(self, query: Any, params: Any = None) -> Any:
        raw = self.raw
        if raw is None:
            raise DisconnectionError(
                'No database connection in this thread; call begin() first.')
        try:
            cursor = raw.cursor()
            cursor.execute(query, params)
        except psycopg2.Error as e:
            error = self.statement_error(e)
            if error is e:
                # The same exceptions as statements run through SQLObject.
                error = translate_error(e)
            raise error from e
        return cursor

    def statement_error(self, error: BaseException) -> BaseException:
        raw = self.raw
        if is_disconnect(error, raw):
            return self.lost_in_transaction(error)
        if self.config.writes and is_read_only_error(error):
            # The server became read-only (a fence, a demotion): this
            # session cannot write again.  A server's report can be stale
            # behind a pooler (PgBouncer tells a client only of changes
            # seen while it was linked), so the error itself decides.
            self.discard('the server refused a write: %s'
                         % server_message(error))
            return with_sqlstate(ReadOnlyServerError(
                '%s\n(%s does not accept writes any more: a standby, or a '
                'primary fenced or demoted.  Nothing of the transaction was '
                'committed; call abort(), then begin() waits for a writable '
                'server and the transaction can run again.)'
                % (server_message(error), self.config.describe())), error)
        return with_sqlstate(error, error)

    def lost_in_transaction(self, error: BaseException) -> DisconnectionError:
        """The error to raise when ``error`` killed the link mid-transaction.
        """
        return with_sqlstate(DisconnectionError(
            '%s\n(The connection to %s was lost during a transaction; nothing '
            'of it was committed.  Call abort(), then begin() and run it '
            'again.)' % (server_message(error), self.config.describe())),
            error)

    def is_disconnect(self, error: BaseException) -> bool:
        return is_disconnect(error, self.raw)

    # -- ending ------------------------------------------------------------

    def discard(self, reason: str) -> None:
        raw, self.raw = self.raw, None
        self._poller = None
        if raw is None:
            return
        self._lost = True
        self._coordinator.note_loss()
        self._servers.note_lost(raw, reason)
        log.warning('Lost the connection to %s: %s.',
                    self.config.describe(), reason)
        try:
            raw.close()
        except psycopg2.Error:
            pass

    def close(self) -> None:
        raw, self.raw = self.raw, None
        self._poller = None
        if raw is None or raw.closed:
            return
        rollback_quietly(raw)
        try:
            raw.close()
        except psycopg2.Error:
            pass

    def __repr__(self) -> str:
        state = 'connected' if self.raw is not None and not self.raw.closed \
            else 'not connected'
        return '<ReconnectingConnection %s, %s>' % (
            self.config.describe(), state)

