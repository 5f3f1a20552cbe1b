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
from canonical.database.classify import server_message
from canonical.database.classify import translate_error
from canonical.database.interfaces import DisconnectionError
from canonical.database.interfaces import IDatabaseConfig
from canonical.database.interfaces import IDatabaseConnection
from canonical.database.interfaces import IPreparedTransactions
from canonical.database.interfaces import IReconnectCoordinator
from canonical.database.isolation import AUTOCOMMIT_ISOLATION
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


@implementer(IDatabaseConnection)
class ReconnectingConnection:
    """See IDatabaseConnection; an adapter from IDatabaseConfig."""

    def __init__(self, config: IDatabaseConfig) -> None:
        self.config = config
        self.raw: Optional[RawConnection] = None
        self._coordinator: IReconnectCoordinator = coordinator_for(config)
        self.prepared: IPreparedTransactions = prepared_for(config)
        self._poller: Any = None
        self._isolation: Optional[str] = None
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
            return self._connect(lost=False)
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
                return raw          # statement, safe to send again
            except psycopg2.Error as e:
                if not is_disconnect(e, raw):
                    raise
                self.discard(server_message(e))

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
            if is_disconnect(e, raw):
                raise self.lost_in_transaction(e) from e
            # The same exceptions as statements run through SQLObject.
            raise translate_error(e) from e
        return cursor

    def lost_in_transaction(self, error: BaseException) -> DisconnectionError:
        """The error to raise when ``error`` killed the link mid-transaction.
        """
        return DisconnectionError(
            '%s\n(The connection to %s was lost during a transaction; nothing '
            'of it was committed.  Call abort(), then begin() and run it '
            'again.)' % (server_message(error), self.config.describe()))

    def is_disconnect(self, error: BaseException) -> bool:
        return is_disconnect(error, self.raw)

    # -- ending ------------------------------------------------------------

    def discard(self, reason: str) -> None:
        raw, self.raw = self.raw, None
        self._poller = None
        if raw is None:
            return
        self._coordinator.note_loss()
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

