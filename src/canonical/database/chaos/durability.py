"""The crash-durability case (the cluster runs with fsync on).

1. Commit N units through the library (a quarter of them in two phases)
   and keep the uids whose commit() returned.
2. Leave a prepared transaction behind, as a process that died between
   PREPARE and COMMIT PREPARED would (its gid names a dead pid).
3. ``pg_ctl stop -m immediate`` (a crash), then start again.
4. Every acknowledged unit is there exactly once; the prepared transaction
   survived the crash and is still undecided.
5. A new transaction manager starts up, as a new process would, and
   resolves the orphan (the library commits what dead processes prepared);
   nothing prepared is left and the ledger holds.
"""

from __future__ import annotations

import random
import subprocess
import time
from typing import Any, Callable, Dict, List

import transaction

from canonical.database.chaos.audit import ledger_invariant
from canonical.database.chaos.workload import Journal, JournalBook, Unit
from canonical.database.chaos.workload import transfer
from canonical.database.twophase import new_gid
from canonical.database.perdatabase import forget_all
from canonical.lp import initZopeless

__all__ = ['durability_case']


def _dead_pid() -> int:
    child = subprocess.Popen(['true'])
    child.wait()
    return child.pid


def _orphan_gid() -> str:
    parts = new_gid().split(':')
    parts[2] = str(_dead_pid())
    return ':'.join(parts)


def _manager(cluster: Any, dbname: str, timeout: float) -> Any:
    # Stands for a new process: one that has not yet looked for the
    # prepared transactions of dead processes, which it does on first
    # connect.
    forget_all()
    return initZopeless(dbname=dbname,
                        dbhost='127.0.0.1 port=%d' % cluster.port,
                        dbuser='launchpad', implicitBegin=False,
                        reconnect_timeout=timeout,
                        resolve_commit_outcome=True)


def _present(conn: Any, uids: List[str]) -> Dict[str, int]:
    cur = conn.cursor()
    cur.execute('SELECT uid, count(*) FROM chaos_transfer '
                'WHERE uid = ANY(%s) GROUP BY uid', (uids,))
    return dict(cur.fetchall())


def _prepared(conn: Any, dbname: str) -> List[str]:
    cur = conn.cursor()
    cur.execute('SELECT gid FROM pg_prepared_xacts WHERE database = %s',
                (dbname,))
    return [row[0] for row in cur.fetchall()]


def durability_case(cluster: Any, admin: Callable[..., Any], app: Callable,
                    dbname: str, accounts: int, units: int = 100,
                    seed: Any = 0) -> Dict[str, Any]:
    """Run the case; ``app()`` gives a direct connection as the app role."""
    rng = random.Random('%s/durability' % (seed,))
    problems: List[str] = []
    journal = JournalBook()
    acknowledged: List[str] = []
    ztm = _manager(cluster, dbname, 60.0)
    try:
        for i in range(units):
            src, dst = rng.sample(range(1, accounts + 1), 2)
            unit = Unit(uid='d-%d' % i, worker=-1, src=src, dst=dst,
                        amount=rng.randint(1, 100), two_phase=i % 4 == 0,
                        started=time.monotonic())
            for attempt in transaction.manager.attempts(5):
                with attempt:
                    if unit.two_phase:
                        transaction.get().join(Journal(journal, unit.uid))
                    transfer(unit)
            acknowledged.append(unit.uid)
    finally:
        ztm.uninstall()

    # A prepared transaction whose process is gone.
    gid = _orphan_gid()
    src, dst = rng.sample(range(1, accounts + 1), 2)
    raw = app()
    try:
        raw.tpc_begin(gid)
        cur = raw.cursor()
        cur.execute('INSERT INTO chaos_transfer (uid, src, dst, amount) '
                    "VALUES ('orphan', %s, %s, 7)", (src, dst))
        cur.execute('UPDATE chaos_account SET balance = balance - 7 '
                    'WHERE id = %s', (src,))
        cur.execute('UPDATE chaos_account SET balance = balance + 7 '
                    'WHERE id = %s', (dst,))
        raw.tpc_prepare()
    finally:
        raw.close()

    started = time.monotonic()
    cluster.restart('immediate')
    crash_seconds = time.monotonic() - started

    conn = admin(dbname=dbname)
    try:
        found = _present(conn, acknowledged + ['orphan'])
        missing = [uid for uid in acknowledged if found.get(uid, 0) != 1]
        if missing:
            problems.append('%d acknowledged units not found once after the '
                            'crash: %s' % (len(missing), missing[:10]))
        survived = gid in _prepared(conn, dbname)
        if not survived:
            problems.append('the prepared transaction did not survive the '
                            'crash')
        if found.get('orphan'):
            problems.append('the orphan was visible before it was resolved')
    finally:
        conn.close()

    # Start-up of a new manager: it commits what the dead process prepared.
    ztm = _manager(cluster, dbname, 61.0)
    try:
        ztm.begin()
        ztm.abort()
    finally:
        ztm.uninstall()

    conn = admin(dbname=dbname)
    try:
        left = _prepared(conn, dbname)
        resolved = gid not in left
        if left:
            problems.append('prepared transactions left after start-up '
                            'recovery: %s' % left[:10])
        orphan = _present(conn, ['orphan']).get('orphan', 0)
        if orphan != 1:
            problems.append('the recovered orphan is present %d times'
                            % orphan)
        invariant = ledger_invariant(conn)
        if not invariant['holds']:
            problems.append('ledger invariant broken: %r' % (invariant,))
    finally:
        conn.close()
    journal_missing = [uid for uid in journal.entries
                       if uid not in acknowledged]
    if journal_missing:
        problems.append('journal entries without acknowledgement: %s'
                        % journal_missing[:10])
    return {
        'units': units,
        'acknowledged': len(acknowledged),
        'two_phase': sum(1 for i in range(units) if i % 4 == 0),
        'present_after_crash': len(acknowledged) - len(missing),
        'crash_restart_seconds': round(crash_seconds, 3),
        'prepared_survived': survived,
        'prepared_resolved': resolved,
        'passed': not problems,
        'problems': problems,
    }

