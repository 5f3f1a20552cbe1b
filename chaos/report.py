"""The soak's figures: a short table for people, a JSON file for tools."""

from __future__ import annotations

import bisect
import json
import os
from typing import Any, Dict, List, Optional

__all__ = ['figures', 'table', 'write_json', 'percentile']


def percentile(values: List[float], share: float) -> Optional[float]:
    """The nearest-rank percentile (share in 0..1), or None."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, int(-(-share * len(ordered) // 1)))
    return ordered[min(rank, len(ordered)) - 1]


def _r(value: Optional[float]) -> Optional[float]:
    return None if value is None else round(value, 3)


def _failed_by_kind(units: List[Any], injector: Any) -> Dict[str, int]:
    """Failed attempts, each put down to the last fault begun before it
    ('none' before the first)."""
    starts = [f.started for f in injector.faults]
    failed = {kind: 0 for kind in injector.kinds}
    failed['none'] = 0
    for unit in units:
        for at in unit.error_times:
            i = bisect.bisect_right(starts, at) - 1
            kind = injector.faults[i].kind if i >= 0 else 'none'
            failed[kind] = failed.get(kind, 0) + 1
    return failed


def _failovers(units: List[Any], injector: Any,
               started: float) -> Dict[str, Any]:
    """Per kind: seconds from the loss of the primary (and from the start
    of the fault) to the first commit a worker saw on the new primary."""
    commits = sorted((u.done, u.server) for u in units
                     if u.state == 'committed' and u.server)
    times: Dict[str, List[float]] = {}
    from_start: Dict[str, List[float]] = {}
    for fault in injector.faults:
        new, gone = (fault.detail.get('new_primary'),
                     fault.detail.get('gone_at'))
        if new is None or gone is None:
            continue
        first = next((done for done, server in commits
                      if server == new and done > gone), None)
        fault.detail['gone_at'] = round(gone - started, 3)
        fault.detail['first_commit_on_new_primary'] = _r(
            None if first is None else first - gone)
        if first is not None:
            times.setdefault(fault.kind, []).append(first - gone)
            from_start.setdefault(fault.kind, []).append(
                first - fault.started)
    return {kind: {'n': len(values),
                   'median': _r(percentile(values, 0.5)),
                   'max': _r(max(values)),
                   'median_from_fault_start': _r(percentile(
                       from_start[kind], 0.5))}
            for kind, values in sorted(times.items())}


def figures(units: List[Any], workers: List[Any], injector: Any,
            outages: List[float], started: float) -> Dict[str, Any]:
    """Recovery and outage figures of a run."""
    # A disrupted unit recovers when it commits after its first failure.
    unit_recovery = [u.done - u.first_error for u in units
                     if u.state == 'committed' and u.first_error is not None]
    commits = sorted(t for w in workers for t in w.commit_times)
    gaps = [b - a for a, b in zip(commits, commits[1:])]
    # The system recovers from a fault with the first commit after it ends.
    fault_recovery = []
    faults = []
    for fault in injector.faults:
        i = bisect.bisect_left(commits, fault.ended)
        after = commits[i] - fault.ended if i < len(commits) else None
        if after is not None:
            fault_recovery.append(after)
        faults.append({
            'kind': fault.kind,
            'at': round(fault.started - started, 3),
            'lasted': round(fault.ended - fault.started, 3),
            'first_commit_after': _r(after),
            'detail': fault.detail,
            'error': fault.error,
        })
    errors: Dict[str, int] = {}
    for unit in units:
        for name in unit.errors:
            errors[name] = errors.get(name, 0) + 1
    samples: Dict[str, str] = {}
    for worker in workers:
        for name, text in worker.samples.items():
            samples.setdefault(name, text)
    failovers = _failovers(units, injector, started)
    return {
        'faults_by_kind': injector.counts(),
        'failed_attempts_by_kind': _failed_by_kind(units, injector),
        'failover_seconds': failovers,
        'faults': faults,
        'fault_errors': sum(1 for f in injector.faults if f.error),
        'longest_outage': _r(max(outages, default=0.0)),
        'outages_seen': len(outages),
        'longest_commit_gap': _r(max(gaps, default=0.0)),
        'recovery': {
            'disrupted_units': len(unit_recovery),
            'p50': _r(percentile(unit_recovery, 0.5)),
            'p95': _r(percentile(unit_recovery, 0.95)),
            'max': _r(max(unit_recovery, default=None)),
            'after_fault_p95': _r(percentile(fault_recovery, 0.95)),
            'after_fault_max': _r(max(fault_recovery, default=None)),
        },
        'errors_by_type': dict(sorted(errors.items(),
                                      key=lambda kv: -kv[1])),
        'error_samples': samples,
    }


def _s(value: Optional[float]) -> str:
    return '-' if value is None else '%.3f s' % value


def table(report: Dict[str, Any]) -> str:
    """The short table."""
    units = report.get('units') or {}
    leaks = report.get('final_leaks') or report.get('leaks') or {}
    invariant = report.get('invariant') or {}
    recovery = report.get('recovery') or {}
    rows = [
        ('units attempted', units.get('attempted')),
        ('committed', units.get('committed')),
        ('  of them two-phase', units.get('committed_two_phase')),
        ('failed and retried', '%s (%s failed attempts)' % (
            units.get('failed_and_retried'), units.get('failed_attempts'))),
        ('failed, never committed', units.get('failed_final')),
        ('ambiguous', '%s (%s found committed)' % (
            units.get('ambiguous'), units.get('ambiguous_present'))),
        ('lost', units.get('lost')),
        ('lost by the server (async)', units.get('lost_by_server')),
        ('reported wrongly', report.get('library_wrong')),
        ('duplicated', units.get('duplicated')),
        ('failed but present', units.get('failed_present')),
        ('ledger invariant', 'holds' if invariant.get('holds')
         else 'BROKEN'),
        ('leaked backends', leaks.get('leaked_backends')),
        ('prepared xacts left', leaks.get('prepared')),
        ('password shown', report.get('password_leaks')),
        ('longest outage', _s(report.get('longest_outage'))),
        ('longest commit gap', _s(report.get('longest_commit_gap'))),
        ('p95 recovery', '%s (unit: first error to commit; p50 %s, max %s)'
         % (_s(recovery.get('p95')), _s(recovery.get('p50')),
            _s(recovery.get('max')))),
        ('p95 after-fault', '%s (fault end to next commit)'
         % _s(recovery.get('after_fault_p95'))),
    ]
    lines = ['Chaos soak: seed %s, %s workers, %s s, '
             'resolve_commit_outcome=%s' % (
                 report.get('seed'), report.get('workers'),
                 report.get('seconds', report.get('duration')),
                 report.get('resolve_commit_outcome'))]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        lines.append('  %-*s  %s' % (width, name, '-' if value is None
                                     else value))
    if report.get('topology', 'single') != 'single':
        lines.append('  topology %s: %s' % (report['topology'],
                                            report.get('dbhost')))
    faults = report.get('faults_by_kind') or {}
    lines.append('  faults injected: %s' % (', '.join(
        '%s %d' % kv for kv in faults.items()) or 'none'))
    lines.extend(_kind_lines(report))
    durability = report.get('durability')
    if durability:
        lines.append(
            '  durability: %d/%d acknowledged units present after '
            'pg_ctl stop -m immediate; prepared xact survived: %s, '
            'resolved: %s' % (
                durability.get('present_after_crash', 0),
                durability.get('acknowledged', 0),
                durability.get('prepared_survived'),
                durability.get('prepared_resolved')))
    reads = report.get('reads')
    if reads:
        lines.append(
            '  read units: %d (%d on a standby), %d uids checked, '
            'read-your-writes violations %d (excused as lost by a server '
            '%d), failed reads %s' % (
                reads.get('reads', 0), reads.get('on_standby', 0),
                reads.get('uids_checked', 0), reads.get('violations', 0),
                reads.get('excused_as_lost_by_server', 0),
                reads.get('errors') or 0))
    unexpected = (report.get('anomalies') or {}).get('unexpected_errors')
    if unexpected:
        for name, message in unexpected.items():
            lines.append('  unexpected %s: %s' % (name, message))
    if report.get('passed'):
        lines.append('AUDIT PASSED')
    else:
        lines.append('AUDIT FAILED: %s' % '; '.join(
            report.get('failures') or ['unknown']))
        if report.get('cluster_kept'):
            lines.append('  the cluster is kept in %s'
                         % report['cluster_kept'])
    return '\n'.join(lines)


def _kind_lines(report: Dict[str, Any]) -> List[str]:
    """Per kind: faults, failed attempts, failover times."""
    failovers = report.get('failover_seconds') or {}
    failed = report.get('failed_attempts_by_kind') or {}
    if report.get('topology', 'single') == 'single':
        return []
    lines = ['  %-24s %6s %8s  %s' % ('kind', 'faults', 'failed',
                                      'loss to first commit on the new '
                                      'primary (median / max)')]
    for kind, n in (report.get('faults_by_kind') or {}).items():
        times = failovers.get(kind) or {}
        lines.append('  %-24s %6d %8d  %s / %s' % (
            kind, n, failed.get(kind, 0), _s(times.get('median')),
            _s(times.get('max'))))
    return lines


def write_json(report: Dict[str, Any], path: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        json.dump(report, f, indent=2, sort_keys=True, default=str)
        f.write('\n')
    os.replace(tmp, path)
