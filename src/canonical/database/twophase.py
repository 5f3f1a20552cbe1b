"""Two-phase commit: transaction ids, finishing over reconnections, and
recovery of prepared transactions a dead process left behind.

A gid names the host and process that prepared it:
``zopeless:<host>:<pid>:<counter>``.  The database votes last, so a
transaction is prepared only after every other data manager voted yes:
the decision was to commit.  A prepared transaction whose process is gone
is therefore committed at start-up (presumed commit).
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import socket
import time
from typing import Any, Iterable, List, Optional

import psycopg2

from canonical.database.classify import is_disconnect
from canonical.database.classify import is_read_only_error
from canonical.database.classify import server_message
from canonical.database.classify import sqlstate
from canonical.database.interfaces import IDatabaseConnection
from canonical.database.interfaces import IServerIdentity
from canonical.database.processes import pid_alive
from canonical.database.rawsql import finish_prepared
from canonical.database.rawsql import rollback_quietly

__all__ = [
    'GID_PREFIX', 'new_gid', 'this_host_prefix', 'this_process_prefix',
    'settle', 'commit_prepared', 'rollback_prepared',
    'COMMITTED', 'ROLLED_BACK', 'NOT_COMMITTED', 'UNKNOWN', 'DEFERRED',
    'recover_orphans', 'orphaned_gids', 'rollback_quietly',
]

log = logging.getLogger('canonical.database.twophase')

GID_PREFIX = 'zopeless'
_HOST = re.sub(r'[^A-Za-z0-9.-]', '-', socket.gethostname())[:40] or 'host'
_counter = itertools.count(1)


def this_host_prefix() -> str:
    """The start of every gid made on this host."""
    return '%s:%s:' % (GID_PREFIX, _HOST)


def this_process_prefix() -> str:
    """The start of every gid made by this process."""
    return '%s:%s:%d:' % (GID_PREFIX, _HOST, os.getpid())


def new_gid() -> str:
    """A transaction id unique across hosts, processes and time."""
    # os.getpid() each time: a forked child must not reuse its parent's ids.
    return '%s:%s:%d:%d:%d' % (GID_PREFIX, _HOST, os.getpid(),
                               _START, next(_counter))


_START = int(time.time() * 1000)


_BACKEND_GRACE = 1.0  # seconds an old backend may take to finish
# How long settling may wait for a session that still holds the
# transaction, where it cannot be found (behind a pooler), before giving up.
_SETTLE_SECONDS = 30.0
# "prepared transaction with identifier ... is busy"
_BUSY = '55000'

# Outcomes of settling a transaction whose answer was lost.
COMMITTED = 'committed'
ROLLED_BACK = 'rolled back'
NOT_COMMITTED = 'not committed'
UNKNOWN = 'unknown'
DEFERRED = 'deferred'


def _wait_for_backend_exit(raw: Any, pid: int) -> None:
    """Wait until backend ``pid`` of the server of ``raw`` is gone.

    A statement whose answer was lost may still be running there: until
    that backend exits, a PREPARE may not show in pg_prepared_xacts yet and
    a COMMIT PREPARED may still be under way.  After a grace period the
    backend is terminated, which settles its statement one way or the
    other.  Only called with a pid this very server gave (see
    IServerIdentity.backend_of): never one libpq reported (a pooler
    invents it) or one of another server.
    """
    cursor = raw.cursor()
    deadline = time.monotonic() + _BACKEND_GRACE
    terminated = False
    while True:
        cursor.execute('SELECT 1 FROM pg_stat_activity WHERE pid = %s',
                       (pid,))
        if cursor.fetchone() is None:
            return
        if not terminated and time.monotonic() > deadline:
            cursor.execute('SELECT pg_terminate_backend(%s)', (pid,))
            terminated = True
        time.sleep(0.01)


def _same_history(old: Optional[IServerIdentity],
                  current: Optional[IServerIdentity]) -> bool:
    """True unless a failover may have come between ``old`` and
    ``current``: a promotion always starts a new timeline."""
    if old is None or current is None:
        return True  # not asked (a reader, an old server): as before
    return (old.system, old.timeline) == (current.system, current.timeline)


def _look(db: IDatabaseConnection, raw: Any, gid: str, commit: bool,
          old: Optional[IServerIdentity], slot: Optional[str],
          deadline: float) -> str:
    """One attempt at settling ``gid`` on the live connection ``raw``."""
    rollback_quietly(raw)
    current = getattr(raw, 'server', None)
    pid = old.backend_of(current) if old is not None else None
    if pid is not None and pid != raw.info.backend_pid:
        _wait_for_backend_exit(raw, pid)
    committed = None
    if slot is not None:
        # This process's prepared transactions this server holds (adopted
        # as it connected, see prepared.py) lock their connection's slot
        # row, perhaps this very slot: finished first, as begin() would,
        # or the lookup would wait on them until its deadline.
        db.prepared.finish_pending(raw)
        prepared, committed = db.outcomes.lookup(raw, slot, gid, deadline)
        if not prepared and committed is None:
            return UNKNOWN  # the old session held on past the deadline
    else:
        cursor = raw.cursor()
        cursor.execute('SELECT 1 FROM pg_prepared_xacts WHERE gid = %s',
                       (gid,))
        prepared = cursor.fetchone() is not None
    if prepared:
        finish_prepared(raw, gid, commit)
        return COMMITTED if commit else ROLLED_BACK
    if not commit:
        return NOT_COMMITTED  # never prepared here: nothing to undo
    if committed is not None:
        return COMMITTED if committed else NOT_COMMITTED
    # Prepared, acknowledged, and gone: committed, unless a failover to a
    # server that never received the PREPARE came in between.
    return COMMITTED if _same_history(old, current) else UNKNOWN


def settle(db: IDatabaseConnection, gid: str, commit: bool,
           old: Optional[IServerIdentity] = None,
           slot: Optional[str] = None) -> str:
    """Settle transaction ``gid`` whose answer was lost, on a new
    connection, reconnecting as long as db.ensure_connected() lets us.

    ``commit`` says what was decided should it be found prepared.  ``old``
    is the identity of the connection that died, ``slot`` its commit
    outcome slot (resolve_commit_outcome), if any.  Returns COMMITTED,
    ROLLED_BACK, NOT_COMMITTED (nothing of it is on the current server) or
    UNKNOWN; raises what ensure_connected() raises and the server's
    refusals.
    """
    deadline = time.monotonic() + _SETTLE_SECONDS
    while True:
        raw = db.ensure_connected()
        try:
            outcome = _look(db, raw, gid, commit, old, slot, deadline)
        except psycopg2.Error as e:
            if raw.closed or is_disconnect(e, raw) or is_read_only_error(e):
                db.discard(server_message(e))
                continue
            if sqlstate(e) == _BUSY and time.monotonic() < deadline:
                # COMMIT PREPARED under way in a session we cannot see.
                rollback_quietly(raw)
                time.sleep(0.05)
                continue
            raise
        db.prepared.note_settled()
        log.info('Settled transaction %s after its answer was lost: %s.',
                 gid, outcome)
        return outcome


def _settle_prepared(db: IDatabaseConnection, gid: Optional[str],
                     commit: bool, old: Optional[IServerIdentity],
                     slot: Optional[str]) -> str:
    if gid is None:
        return COMMITTED if commit else ROLLED_BACK
    try:
        return settle(db, gid, commit, old, slot)
    except psycopg2.Error as e:
        reason = server_message(e)
    except Exception as e:  # noqa: BLE001 - deferred, never lost
        reason = e.__class__.__name__
    db.prepared.defer(gid, commit)
    log.critical('Prepared transaction %s could not be %s yet (%s); the '
                 'next begin() of this process will.', gid,
                 'committed' if commit else 'rolled back', reason)
    return DEFERRED


def commit_prepared(db: IDatabaseConnection, gid: Optional[str],
                    old: Optional[IServerIdentity] = None,
                    slot: Optional[str] = None) -> str:
    """Finish a decided transaction whose COMMIT PREPARED answer was lost;
    never raises (tpc_finish must not), returns the outcome.

    When it cannot be finished now (the database stayed away longer than
    reconnect_timeout, or the server refused), the next begin() of this
    process finishes it (DEFERRED); were the process to die first,
    start-up recovery would.  NOT_COMMITTED or UNKNOWN mean a failover
    lost it or may have.
    """
    return _settle_prepared(db, gid, True, old, slot)


def rollback_prepared(db: IDatabaseConnection, gid: Optional[str],
                      old: Optional[IServerIdentity] = None,
                      slot: Optional[str] = None) -> str:
    """Roll back a transaction that was (maybe) prepared but not decided;
    deferred like commit_prepared when it cannot be done now."""
    return _settle_prepared(db, gid, False, old, slot)


def orphaned_gids(gids: Iterable[str]) -> List[str]:
    """The gids of this host whose process has died."""
    orphans = []
    for gid in gids:
        parts = gid.split(':')
        if len(parts) != 5 or parts[0] != GID_PREFIX or parts[1] != _HOST:
            continue
        try:
            pid = int(parts[2])
        except ValueError:
            continue
        if pid != os.getpid() and not pid_alive(pid):
            orphans.append(gid)
    return orphans


def recover_orphans(raw: Any) -> List[str]:
    """Commit prepared transactions left by dead processes of this host.

    ``raw`` is an idle library connection (autocommit mode); it is left
    idle.  Returns the gids committed.
    """
    cursor = raw.cursor()
    cursor.execute('SELECT gid FROM pg_prepared_xacts WHERE gid LIKE %s '
                   'AND database = current_database()',
                   (GID_PREFIX + ':%',))
    gids = [row[0] for row in cursor.fetchall()]
    done = []
    for gid in orphaned_gids(gids):
        try:
            finish_prepared(raw, gid, True)
        except psycopg2.Error as e:
            log.error('Could not recover prepared transaction %s: %s', gid,
                      server_message(e))
            continue
        log.warning('Committed prepared transaction %s left by a process '
                    'that died.', gid)
        done.append(gid)
    return done
