"""The audit: what the workers were told against what the database holds.

* every unit reported committed is there exactly once (else lost or
  duplicated);
* every unit reported failed is absent;
* ambiguous units are counted (and found present or absent);
* no transfer row belongs to a unit nobody started;
* every two-phase unit the journal recorded is in the database, and every
  committed two-phase unit is in the journal;
* the ledger sum is unchanged and each balance matches its transfers
  (whole transactions lost by a server keep it so);
* after an asynchronous failover, a committed unit missing afterwards
  that the old primary held when it went away (and was acknowledged
  before) was lost by the server: counted apart, as ``lost_by_server``;
  everything else the library reported wrongly counts in
  ``library_wrong``, which must be 0;
* no backend of the library's application_name is left, and no prepared
  transaction is left in ``pg_prepared_xacts``.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, Iterable, List, Optional

__all__ = ['audit_units', 'ledger_invariant', 'leftovers', 'failures',
           'library_wrong', 'APP_NAME']

APP_NAME = 'zopeless'
_SAMPLE = 10


def _counts(conn: Any) -> Dict[str, int]:
    cur = conn.cursor()
    cur.execute('SELECT uid, count(*) FROM chaos_transfer GROUP BY uid')
    return dict(cur.fetchall())


def audit_units(conn: Any, units: Iterable[Any], journal: Dict[str, int],
                server_lost: Optional[Dict[str, float]] = None
                ) -> Dict[str, Any]:
    """Compare the units' reported outcomes with the transfer rows.

    ``server_lost``: uid -> deadline, what old primaries held that their
    successors lacked (see IFaultInjector.server_lost)."""
    server_lost = server_lost or {}
    counts = _counts(conn)
    units = list(units)
    known = {u.uid for u in units}
    committed = [u for u in units if u.state == 'committed']
    failed = [u for u in units if u.state == 'failed']
    ambiguous = [u for u in units if u.state == 'ambiguous']
    pending = [u for u in units if u.state == 'pending']
    missing = [u for u in committed if counts.get(u.uid, 0) == 0]
    by_server = [u.uid for u in missing if u.uid in server_lost
                 and u.done <= server_lost[u.uid]]
    gone = set(by_server)
    lost = [u.uid for u in missing if u.uid not in gone]
    duplicated = sorted(uid for uid, n in counts.items() if n > 1)
    failed_present = [u.uid for u in failed if counts.get(u.uid, 0)]
    strangers = sorted(uid for uid in counts if uid not in known)
    in_journal_not_db = sorted(uid for uid in journal
                               if counts.get(uid, 0) != 1
                               and uid not in gone)
    journal_twice = sorted(uid for uid, n in journal.items() if n != 1)
    two_phase_not_in_journal = [u.uid for u in committed
                                if u.two_phase and u.uid not in journal]
    return {
        'attempted': len(units),
        'committed': len(committed),
        'committed_two_phase': sum(1 for u in committed if u.two_phase),
        'failed_and_retried': sum(1 for u in committed if u.failures),
        'failed_attempts': sum(u.failures for u in units),
        'failed_final': len(failed),
        'pending': len(pending),
        'ambiguous': len(ambiguous),
        'ambiguous_present': sum(1 for u in ambiguous
                                 if counts.get(u.uid, 0)),
        'lost': len(lost),
        'lost_by_server': len(by_server),
        'held_by_old_primaries_only': len(server_lost),
        'duplicated': len(duplicated),
        'failed_present': len(failed_present),
        'strangers': len(strangers),
        'journal_mismatch': len(in_journal_not_db) + len(journal_twice)
        + len(two_phase_not_in_journal),
        'samples': {
            'lost': lost[:_SAMPLE],
            'lost_by_server': by_server[:_SAMPLE],
            'duplicated': duplicated[:_SAMPLE],
            'failed_present': failed_present[:_SAMPLE],
            'strangers': strangers[:_SAMPLE],
            'journal': (in_journal_not_db + journal_twice
                        + two_phase_not_in_journal)[:_SAMPLE],
        },
    }


def ledger_invariant(conn: Any) -> Dict[str, Any]:
    """The sum of the balances, and each balance against its transfers."""
    cur = conn.cursor()
    cur.execute('SELECT sum(balance), sum(opening), count(*) '
                'FROM chaos_account')
    total, opening, accounts = cur.fetchone()
    cur.execute("""
        SELECT a.id, a.balance, a.opening
               + coalesce((SELECT sum(amount) FROM chaos_transfer
                           WHERE dst = a.id), 0)
               - coalesce((SELECT sum(amount) FROM chaos_transfer
                           WHERE src = a.id), 0)
        FROM chaos_account a
        WHERE a.balance <> a.opening
               + coalesce((SELECT sum(amount) FROM chaos_transfer
                           WHERE dst = a.id), 0)
               - coalesce((SELECT sum(amount) FROM chaos_transfer
                           WHERE src = a.id), 0)
        ORDER BY a.id""")
    mismatched = cur.fetchall()
    return {
        'accounts': accounts,
        'sum': int(total),
        'expected_sum': int(opening),
        'holds': int(total) == int(opening) and not mismatched,
        'mismatched_accounts': [list(map(int, row))
                                for row in mismatched[:_SAMPLE]],
    }


def leftovers(admin: Callable[[], Any], dbname: str, baseline: int,
              wait: float = 10.0) -> Dict[str, Any]:
    """Library backends above ``baseline`` and prepared transactions left,
    waiting up to ``wait`` seconds for closing backends to exit."""
    deadline = time.monotonic() + wait
    while True:
        conn = admin()
        try:
            cur = conn.cursor()
            cur.execute('SELECT pid, state, backend_start::text, '
                        'left(query, 80) FROM pg_stat_activity '
                        'WHERE application_name = %s AND datname = %s',
                        (APP_NAME, dbname))
            backends = cur.fetchall()
            cur.execute('SELECT gid, prepared::text FROM pg_prepared_xacts '
                        'WHERE database = %s ORDER BY gid', (dbname,))
            prepared = cur.fetchall()
        finally:
            conn.close()
        leaked = len(backends) - baseline
        if (leaked <= 0 and not prepared) or time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    return {
        'backends': len(backends),
        'baseline': baseline,
        'leaked_backends': max(0, leaked),
        'leaked_detail': [list(row) for row in backends[:_SAMPLE]],
        'prepared': len(prepared),
        'prepared_gids': [row[0] for row in prepared[:_SAMPLE]],
    }


def library_wrong(report: Dict[str, Any]) -> int:
    """Everything the library reported wrongly or left behind."""
    units = report.get('units') or {}
    wrong = sum(units.get(key) or 0 for key in (
        'lost', 'duplicated', 'failed_present', 'strangers',
        'journal_mismatch'))
    if report.get('resolve_commit_outcome'):
        wrong += units.get('ambiguous') or 0
    for phase in ('leaks', 'final_leaks'):
        leaks = report.get(phase) or {}
        wrong += (leaks.get('leaked_backends') or 0) + (
            leaks.get('prepared') or 0)
    return wrong + (report.get('split_brain_writes') or 0)


def audit_reads(conn: Any, checkers: Iterable[Any],
                server_lost: Optional[Dict[str, float]] = None
                ) -> Dict[str, Any]:
    """What the read units saw: a uid a read missed although the workers
    had reported it committed before the read began violates
    read-your-writes, unless the servers lost it (it is not in the final
    database, or a failover's successor lacked it)."""
    server_lost = server_lost or {}
    counts = _counts(conn)
    checkers = list(checkers)
    violations = sorted({uid for c in checkers for uid, done, began
                         in c.misses if counts.get(uid, 0) and
                         not (uid in server_lost and
                              done <= server_lost[uid])})
    figures: Dict[str, Any] = {'violations': len(violations),
                               'violating_uids': violations[:20],
                               'excused_as_lost_by_server': len(
                                   {m[0] for c in checkers
                                    for m in c.misses}) - len(violations)}
    for c in checkers:
        for key, value in c.report().items():
            if isinstance(value, int):
                figures[key] = figures.get(key, 0) + value
            elif isinstance(value, dict):
                figures.setdefault(key, {}).update(value)
            elif value:
                figures.setdefault(key, []).append(value)
    return figures


def failures(report: Dict[str, Any]) -> List[str]:
    """Why the audit failed; empty when it passed."""
    why = []
    units = report.get('units') or {}
    for key in ('lost', 'duplicated', 'failed_present', 'strangers',
                'journal_mismatch', 'failed_final', 'pending'):
        if units.get(key):
            why.append('%s: %d' % (key, units[key]))
    if report.get('resolve_commit_outcome') and units.get('ambiguous'):
        why.append('ambiguous units despite resolve_commit_outcome: %d'
                   % units['ambiguous'])
    if report.get('resolve_commit_outcome') and (report.get(
            'commit_outcomes') or {}).get('table_available') is False:
        why.append('resolve_commit_outcome without its table: the workers '
                   'could not write commit outcome markers')
    reads = report.get('reads') or {}
    if reads.get('violations'):
        why.append('read-your-writes violated: %d uids reported committed '
                   'were missing from a later read unit'
                   % reads['violations'])
    for key in ('unexpected_errors', 'crashed'):
        if reads.get(key):
            why.append('read units: %s: %s' % (key, reads[key]))
    if report.get('split_brain_writes'):
        why.append('an old primary took %d rows after its successor was '
                   'promoted' % report['split_brain_writes'])
    if not (report.get('invariant') or {}).get('holds'):
        why.append('ledger invariant broken')
    for phase in ('leaks', 'final_leaks'):
        leaks = report.get(phase) or {}
        if leaks.get('leaked_backends'):
            why.append('%s: %d library backends left' % (
                phase, leaks['leaked_backends']))
        if leaks.get('prepared'):
            why.append('%s: %d prepared transactions left' % (
                phase, leaks['prepared']))
    anomalies = report.get('anomalies') or {}
    for key in ('hung_workers', 'crashed_workers', 'leftover_transactions',
                'unexpected_errors', 'not_joined_by_synchronizer',
                'fault_injector_crashed'):
        if anomalies.get(key):
            why.append('%s: %s' % (key, anomalies[key]))
    if report.get('password_leaks'):
        why.append('the password showed %d time(s) in logs or errors'
                   % report['password_leaks'])
    durability = report.get('durability')
    if durability is not None and not durability.get('passed'):
        why.append('durability: %s' % '; '.join(durability.get(
            'problems') or ['failed']))
    return why
