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

from canonical.database.classify import server_message
from canonical.database.interfaces import IDatabaseConnection
from canonical.database.processes import pid_alive

__all__ = [
    'GID_PREFIX', 'new_gid', 'commit_prepared', 'rollback_prepared',
    'recover_orphans', 'orphaned_gids', 'rollback_quietly',
]

log = logging.getLogger('canonical.database.twophase')

GID_PREFIX = 'zopeless'
_HOST = re.sub(r'[^A-Za-z0-9.-]', '-', socket.gethostname())[:40] or 'host'
_counter = itertools.count(1)


def new_gid() -> str:
    """A transaction id unique across hosts, processes and time."""
    # os.getpid() each time: a forked child must not reuse its parent's ids.
    return '%s:%s:%d:%d:%d' % (GID_PREFIX, _HOST, os.getpid(),
                               _START, next(_counter))


_START = int(time.time() * 1000)


def rollback_quietly(raw: Any) -> None:
    """Roll back whatever ``raw`` has in progress, two-phase or not; a
    connection that cannot is left for its owner to discard."""
    if raw.closed:
        return
    try:
        try:
            raw.tpc_rollback()
        except psycopg2.ProgrammingError:
            raw.rollback()  # not a two-phase transaction
    except psycopg2.Error:
        pass


_BACKEND_GRACE = 1.0  # seconds an old backend may take to finish


def _wait_for_backend_exit(raw: Any, pid: Optional[int]) -> None:
    """Wait until the backend of the connection that died is gone.

    A statement whose answer was lost may still be running there: until
    that backend exits, a PREPARE may not show in pg_prepared_xacts yet and
    a COMMIT PREPARED may still be under way.  After a grace period the
    backend is terminated, which settles its statement one way or the
    other.
    """
    if pid is None:
        return
    cursor = raw.cursor()
    deadline = time.monotonic() + _BACKEND_GRACE
    terminated = False
    while True:
        cursor.execute('SELECT 1 FROM pg_stat_activity WHERE pid = %s',
                       (pid,))
        alive = cursor.fetchone() is not None
        raw.rollback()
        if not alive:
            return
        if not terminated and time.monotonic() > deadline:
            cursor.execute('SELECT pg_terminate_backend(%s)', (pid,))
            raw.rollback()
            terminated = True
        time.sleep(0.01)


def _finish(db: IDatabaseConnection, gid: str, commit: bool,
            old_backend: Optional[int] = None) -> bool:
    """COMMIT/ROLLBACK PREPARED ``gid`` on a fresh connection, reconnecting
    as long as db.ensure_connected() lets us.  True when done (or nothing
    was left to do)."""
    verb = 'commit' if commit else 'rollback'
    while True:
        raw = db.ensure_connected()
        try:
            if raw.status != psycopg2.extensions.STATUS_READY:
                raw.rollback()
            if old_backend != raw.info.backend_pid:
                _wait_for_backend_exit(raw, old_backend)
            cursor = raw.cursor()
            cursor.execute('SELECT 1 FROM pg_prepared_xacts WHERE gid = %s',
                           (gid,))
            present = cursor.fetchone() is not None
            raw.rollback()
            if present:
                getattr(raw, 'tpc_' + verb)(gid)
            if present:
                outcome = 'committed' if commit else 'rolled back'
            else:
                outcome = 'committed already' if commit else 'not prepared'
            log.info('Settled transaction %s after its answer was lost: %s.',
                     gid, outcome)
            db.prepared.note_settled()
            return True
        except psycopg2.Error as e:
            if raw.closed:
                db.discard(server_message(e))
                continue
            log.error('Could not %s prepared transaction %s: %s', verb, gid,
                      server_message(e))
            return False


def _settle(db: IDatabaseConnection, gid: Optional[str], commit: bool,
            old_backend: Optional[int]) -> None:
    if gid is None:
        return
    try:
        if _finish(db, gid, commit, old_backend):
            return
        reason = 'the server refused'
    except Exception as e:  # noqa: BLE001 - deferred, never lost
        reason = e.__class__.__name__
    db.prepared.defer(gid, commit)
    log.critical('Prepared transaction %s could not be %s yet (%s); the '
                 'next begin() of this process will.', gid,
                 'committed' if commit else 'rolled back', reason)


def commit_prepared(db: IDatabaseConnection, gid: Optional[str],
                    old_backend: Optional[int] = None) -> None:
    """Finish a decided transaction; never raises (tpc_finish must not).

    ``old_backend`` is the backend pid of the connection that died under
    the first COMMIT PREPARED.  When it cannot be finished now (the
    database stayed away longer than reconnect_timeout, or the gid is
    busy), the next begin() of this process finishes it;
    were the process to die first, start-up recovery would.
    """
    _settle(db, gid, True, old_backend)


def rollback_prepared(db: IDatabaseConnection, gid: Optional[str],
                      old_backend: Optional[int] = None) -> None:
    """Roll back a transaction that was (maybe) prepared but not decided;
    deferred like commit_prepared when it cannot be done now."""
    _settle(db, gid, False, old_backend)


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

    ``raw`` is an idle connection; it is left idle.  Returns the gids
    committed.
    """
    cursor = raw.cursor()
    cursor.execute('SELECT gid FROM pg_prepared_xacts WHERE gid LIKE %s '
                   'AND database = current_database()',
                   (GID_PREFIX + ':%',))
    gids = [row[0] for row in cursor.fetchall()]
    raw.rollback()
    done = []
    for gid in orphaned_gids(gids):
        try:
            raw.tpc_commit(gid)
        except psycopg2.Error as e:
            log.error('Could not recover prepared transaction %s: %s', gid,
                      server_message(e))
            raw.rollback()
            continue
        log.warning('Committed prepared transaction %s left by a process '
                    'that died.', gid)
        done.append(gid)
    return done
