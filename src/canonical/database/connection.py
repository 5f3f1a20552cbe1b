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
import os
import select
import socket
import time
from typing import Any, Optional

import psycopg2
import psycopg2.extensions
from zope.interface import implementer

from canonical.database import forksafety
from canonical.database.classify import is_disconnect
from canonical.database.classify import server_message
from canonical.database.classify import translate_error
from canonical.database.interfaces import DisconnectionError
from canonical.database.interfaces import IDatabaseConfig
from canonical.database.interfaces import IDatabaseConnection
from canonical.database.isolation import AUTOCOMMIT_ISOLATION
from canonical.database.reconnect import coordinator_for
from canonical.database.twophase import recover_orphans

__all__ = ['ReconnectingConnection']

log = logging.getLogger('canonical.database.connection')

_PSYCOPG2_ISOLATION = {
    'read_committed': psycopg2.extensions.ISOLATION_LEVEL_READ_COMMITTED,
    'repeatable_read': psycopg2.extensions.ISOLATION_LEVEL_REPEATABLE_READ,
    'serializable': psycopg2.extensions.ISOLATION_LEVEL_SERIALIZABLE,
}

_READY = psycopg2.extensions.STATUS_READY
_POLL_MASK = select.POLLIN | select.POLLPRI


def _peer_has_closed(raw: Any) -> Optional[str]:
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
        self._pid = os.getpid()  # whose connection and coordinator these are
        self.raw: Any = None
        self._coordinator = coordinator_for(config)
        self._poller: Any = None
        self._isolation: Optional[str] = None
        self.reconnects = 0

    # -- connecting --------------------------------------------------------

    @property
    def raw(self) -> Any:
        # One inherited across fork() is the parent's, silenced in this
        # process (see forksafety): here it is not connected.
        return self._raw if self._pid == os.getpid() else None

    @raw.setter
    def raw(self, value: Any) -> None:
        self._raw = value

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

    def ensure_connected(self) -> Any:
        if self._pid != os.getpid():
            # Made in the parent before fork(): start afresh in this process.
            self._raw = self._poller = None
            self._coordinator = coordinator_for(self.config)
            self._pid = os.getpid()
        if self.raw is None:
            return self._connect(lost=False)
        reason = self.death_reason()
        if reason is None:
            return self.raw
        self.discard(reason)
        return self._connect(lost=True)

    def _connect(self, lost: bool) -> Any:
        timeout = self.config.reconnect_timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        started = time.monotonic()
        raw = self._coordinator.connect(deadline, reason='lost' if lost
                                        else None)
        self._isolation = None
        self._pid = forksafety.adopt(raw)
        self.raw = raw
        self._poller = select.poll()
        self._poller.register(raw.fileno(), _POLL_MASK)
        self._apply_isolation(raw)
        if not self._coordinator.recovered:
            self._recover_orphans(raw)
        if lost:
            self.reconnects += 1
            log.info('Reconnected to %s in %.3f s.', self.config.describe(),
                     time.monotonic() - started)
        return raw

    def _recover_orphans(self, raw: Any) -> None:
        # Once per process and database: commit what dead processes of this
        # host prepared (see twophase).  One round trip, first connect only.
        self._coordinator.recovered = True
        autocommit = raw.autocommit
        try:
            raw.autocommit = False
            recover_orphans(raw)
        except psycopg2.Error as e:
            log.error('Recovery of prepared transactions failed: %s',
                      server_message(e))
            self._rollback_quietly(raw)
        finally:
            if not raw.closed:
                raw.autocommit = autocommit

    def defer_prepared(self, gid: str, commit: bool) -> None:
        """Commit (or roll back) prepared transaction ``gid`` at the
        process's next begin(): it could not be finished yet, and it holds
        its locks until it is."""
        self._coordinator.unfinished[gid] = commit

    def finish_deferred_now(self) -> dict:
        """Finish deferred prepared transactions on the live connection, if
        there is one, without waiting; return those still unfinished."""
        if self._coordinator.unfinished and self.death_reason() is None:
            self._rollback_quietly(self.raw)
            self._finish_deferred(self.raw)
        return dict(self._coordinator.unfinished)

    def _finish_deferred(self, raw: Any) -> None:
        autocommit = raw.autocommit
        raw.autocommit = True
        try:
            for gid, commit in list(self._coordinator.unfinished.items()):
                try:
                    if commit:
                        raw.tpc_commit(gid)
                    else:
                        raw.tpc_rollback(gid)
                except psycopg2.errors.UndefinedObject:
                    pass  # finished already, by us or by recovery
                except psycopg2.Error as e:
                    log.error('Prepared transaction %s is still not '
                              'finished: %s', gid, server_message(e))
                    continue
                self._coordinator.unfinished.pop(gid, None)
                log.info('%s prepared transaction %s.',
                         'Committed' if commit else 'Rolled back', gid)
        finally:
            if not raw.closed:
                raw.autocommit = autocommit

    def _apply_isolation(self, raw: Any) -> None:
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

    def begin(self, gid: Optional[str]) -> Any:
        while True:
            raw = self.ensure_connected()
            if raw.status != _READY:
                # Left in a transaction by someone using raw directly.
                self._rollback_quietly(raw)
            if self._coordinator.unfinished:
                # A decided two-phase commit holds its locks until done.
                self._finish_deferred(raw)
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
            self._rollback_quietly(raw)

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

    @staticmethod
    def _rollback_quietly(raw: Any) -> None:
        if raw.closed:
            return
        try:
            try:
                raw.tpc_rollback()
            except psycopg2.ProgrammingError:
                raw.rollback()  # not a two-phase transaction
        except psycopg2.Error:
            pass

    def close(self) -> None:
        raw, self.raw = self.raw, None
        self._poller = None
        if raw is None or raw.closed:
            return
        self._rollback_quietly(raw)
        try:
            raw.close()
        except psycopg2.Error:
            pass

    def __repr__(self) -> str:
        state = 'connected' if self.raw is not None and not self.raw.closed \
            else 'not connected'
        return '<ReconnectingConnection %s, %s>' % (
            self.config.describe(), state)

