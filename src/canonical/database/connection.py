"""The reconnecting connection: one thread's link to the database.

Healthy transactions pay nothing for the reconnection logic: begin() does
one poll() system call (the operating system already knows when the peer
closed the socket) and sends nothing; BEGIN goes out with the first
statement (see txcontrol.py, which holds the statement half of the class).
The checks that a live connection may still be used (its server not a
demoted primary, not read-only) read what the connection already knows:
no round trip, no lock, and what they need is looked up once per
connection, not once per transaction.
Only when that first statement finds the link dead, which means nothing of
the transaction has run, is the connection re-established and the statement
sent again.  Statements after the first are never replayed.
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

from canonical.database import forksafety
from canonical.database.classify import is_disconnect
from canonical.database.classify import is_read_only_error
from canonical.database.classify import server_message
from canonical.database.classify import translate_error
from canonical.database.hosts import servers_for
from canonical.database.interfaces import ICommitOutcomes
from canonical.database.interfaces import IDatabaseConfig
from canonical.database.interfaces import IDatabaseConnection
from canonical.database.interfaces import IDatabaseServers
from canonical.database.interfaces import IPreparedTransactions
from canonical.database.interfaces import IReconnectCoordinator
from canonical.database.interfaces import IMeasuredConnection
from canonical.database.interfaces import IServerIdentity
from canonical.database.outcomes import outcomes_for
from canonical.database.prepared import prepared_for
from canonical.database.reconnect import coordinator_for
from canonical.database.positions import positions_for
from canonical.database.stats import stats_for
from canonical.database.twophase import new_gid
from canonical.database.txcontrol import TransactionControl
from canonical.database.rawsql import rollback_quietly

__all__ = ['ReconnectingConnection']

log = logging.getLogger('canonical.database.connection')

RawConnection = psycopg2.extensions.connection
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


@implementer(IDatabaseConnection, IMeasuredConnection)
class ReconnectingConnection(TransactionControl):
    """See IDatabaseConnection; an adapter from IDatabaseConfig."""

    def __init__(self, config: IDatabaseConfig) -> None:
        self.set_config(config)
        self._owner = forksafety.generation()  # whose connection this is
        self._raw: Optional[RawConnection] = None
        self._coordinator: IReconnectCoordinator = coordinator_for(config)
        self._servers: IDatabaseServers = servers_for(config)
        self.prepared: IPreparedTransactions = prepared_for(config)
        self.outcomes: ICommitOutcomes = outcomes_for(config)
        self.positions = positions_for(config) if config.writes else None
        self.stats = stats_for(config)
        self.outcome_slot: Optional[str] = None
        self.outcome_token: Optional[str] = None
        self._poller: Any = None
        # raw.info, kept: psycopg2 makes a new one at every ``raw.info``.
        self._info: Any = None
        # raw.server: asked once, when the connection was made (see
        # identity.py); None when it was not asked.
        self.server: Optional[IServerIdentity] = None
        # The servers' timeline_changes when this connection's server was
        # last found not stale (-1: never).
        self._timelines_seen = -1
        self._was_lost = False  # a connection was discarded since the last one
        self.reconnects = 0
        self.replays = 0

    # -- connecting --------------------------------------------------------

    def death_reason(self) -> Optional[str]:
        """Why the connection is known dead without a round trip, or None.

        One poll() system call; the socket is only peeked at when the
        kernel says something arrived while we were not reading.
        """
        raw = self._raw
        if raw is not None and not raw.closed and not self._poller.poll(0):
            # Nothing arrived while we were not reading: alive.  One that
            # was inherited across fork() never gets here: forksafety gave
            # it, in the child, a socket whose peer is closed, which poll()
            # reports readable.
            return None
        self._forget_if_inherited()
        raw = self._raw
        if raw is None:
            return 'not connected'
        if raw.closed:
            return 'the connection was closed'
        return _peer_has_closed(raw)

    def ensure_connected(self) -> RawConnection:
        reason = self.death_reason()  # forgets one inherited across fork()
        if reason is None:
            return self._raw
        if self._raw is None:
            return self._connect(lost=self._was_lost)
        return self._reconnect(reason)

    def _reconnect(self, reason: str) -> RawConnection:
        self.discard(reason)
        return self._connect(lost=True)

    def _unusable(self, raw: RawConnection) -> Optional[str]:
        """Why a live connection must not be used for the next transaction,
        or None; judged without a round trip."""
        server = self.server
        changes = self._servers.timeline_changes
        if changes != self._timelines_seen:
            # This process has followed a failover since the last look.
            if server is not None and self._servers.is_stale(server):
                # Reached before that failover: a demoted primary,
                # whatever it still accepts.
                return ('the server is a demoted primary (timeline %s was '
                        'followed by a later one)' % server.timeline)
            self._timelines_seen = changes
        if self._writes and reported_read_only(raw):
            # Fenced or demoted since we connected: its reports say so.
            # libpq keeps the server's latest reports (they come with the
            # answers to statements): reading them is no round trip.
            return 'the server no longer accepts writes'
        return None

    def _inherited(self) -> bool:
        """True when the connection was opened before fork(), by another
        process: here it is silenced (see forksafety), never to be used."""
        return self._owner != forksafety.generation()

    def _forget_if_inherited(self) -> None:
        if self._inherited():
            # Made before fork(): this process starts afresh.
            self._drop()
            self._coordinator = coordinator_for(self.config)
            self._servers = servers_for(self.config)
            self.prepared = prepared_for(self.config)
            self.outcomes = outcomes_for(self.config)
            if self.positions is not None:
                self.positions = positions_for(self.config)
            self.stats = stats_for(self.config)
            self.outcome_slot = self.outcome_token = None
            self._owner = forksafety.generation()

    def _connect(self, lost: bool) -> RawConnection:
        timeout = self.config.reconnect_timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        started = time.monotonic()
        while True:
            raw = self._coordinator.connect(self.config, deadline,
                                            reason='lost' if lost else None)
            try:
                self._set_up(raw)
                break
            except psycopg2.Error as e:
                # Fenced between libpq's read-write check and the set-up's
                # first write: leave it as a server that stopped taking
                # writes, and wait for a writable one as begin() does.
                gone = is_disconnect(e, raw) or (
                    self._writes and is_read_only_error(e))
                self.discard(server_message(e))
                if not gone:
                    raise translate_error(e) from e
                lost = True  # gone as soon as made: wait as usual
            except BaseException:
                self.discard('it could not be set up')
                raise
        if lost:
            self.reconnects += 1
            self.stats.reconnects += 1
            log.info('Reconnected to %s in %.3f s.', self.config.describe(),
                     time.monotonic() - started)
        return raw

    def _attach(self, raw: RawConnection) -> None:
        """Make ``raw`` this connection's."""
        # The library sends BEGIN, COMMIT ... itself (see txcontrol.py).
        raw.autocommit = True
        self._owner = forksafety.adopt(raw)
        self._raw = raw
        self.server = getattr(raw, 'server', None)
        self._timelines_seen = -1
        self._info = raw.info
        self._control = None
        self._poller = select.poll()
        self._poller.register(raw.fileno(), _POLL_MASK)
        self._was_lost = False

    def _set_up(self, raw: RawConnection) -> None:
        self._attach(raw)
        self.prepared.recover_orphans(raw)
        self.stats.note_server(raw)
        server = getattr(raw, 'server', None)
        if server is not None:
            # This process's prepared transactions left on this server (a
            # standby promoted since, say): finished at the next begin().
            self.prepared.adopt(server.prepared)
        if self.config.resolve_commit_outcome and self.config.writes and \
                not self.autocommit:
            self.outcome_slot = self.outcomes.open_slot(raw)

    def _new_token(self) -> Optional[str]:
        return new_gid() if self.outcome_slot is not None else None

    def finish_deferred_now(self) -> Dict[str, bool]:
        """Finish deferred prepared transactions on the live connection, if
        there is one, without waiting; return those still unfinished."""
        if self.prepared.pending() and self.death_reason() is None:
            rollback_quietly(self._raw)
            self.prepared.finish_pending(self._raw)
        return self.prepared.pending()

    def is_disconnect(self, error: BaseException) -> bool:
        return is_disconnect(error, self._raw)

    # -- ending ------------------------------------------------------------

    def _forget_slot(self) -> None:
        self.outcomes.retire(self.outcome_slot)
        self.outcome_slot = None

    def _drop(self) -> Optional[RawConnection]:
        """Forget the connection and what was kept of it; return it."""
        raw = self._raw
        self._raw = self._poller = self._info = self._control = None
        self._begin = None
        self.server = None
        return raw

    def discard(self, reason: str) -> None:
        self._forget_if_inherited()
        raw = self._drop()
        if raw is None:
            return
        self._forget_slot()
        self._was_lost = True
        self.stats.connections_dropped += 1
        self._coordinator.note_loss()
        self._servers.note_lost(raw, reason)
        log.warning('Lost the connection to %s: %s.',
                    self.config.describe(), reason)
        try:
            raw.close()
        except psycopg2.Error:
            pass

    def close(self) -> None:
        self._forget_if_inherited()
        raw = self._drop()
        self._forget_slot()
        if raw is None or raw.closed:
            return
        rollback_quietly(raw)
        try:
            raw.close()
        except psycopg2.Error:
            pass

    def __repr__(self) -> str:
        raw = self._raw
        state = 'connected' if raw is not None and not raw.closed \
            else 'not connected'
        return '<ReconnectingConnection %s, %s>' % (
            self.config.describe(), state)

