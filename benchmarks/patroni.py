"""The Patroni section of bin/bench (``--only patroni``).

The failover section promotes a standby itself, at once; under Patroni a
failover is Patroni's doing (a leader race in etcd, a promotion, HAProxy's
checks noticing), so what a job sees there is worth measuring on its own.

On a ``PatroniCluster`` of its own (three members, etcd, HAProxy,
synchronous_mode on, as PatroniLayer runs it) one writer per system
(``failover_kit.Writer`` and the systems of ``failover_systems``, so the
figures compare with the failover section's) commits small units, for
each client path in turn:

* ``hosts``: the host list names every member, with
  ``target_session_attrs=read-write`` for the anchors;
* ``haproxy``: HAProxy's one address, checking Patroni's ``/primary``.

On each path, each fault of ``FAULTS`` is inflicted round after round
(``canonical.testing.patroni.inflict``); per round the section records the
seconds from the fault's start to each system's first commit on the new
leader, and Patroni's own time (its REST API showing a writable leader
again).  ``heal(cluster)`` runs between rounds, so that each round starts
from a leader with every replica streaming.

A commit counts as on the new leader when that member took it (the unit
returns the server's own address) and, for a fault after which the same
member leads again (``postmaster_kill``), when it came after the new
postmaster started: a unit the old postmaster took just after the fault
began is not the recovery.  A system without such a commit ``cap``
seconds after the fault is recorded as timed out, a writer that stopped
on an error as such: nothing is left out.

The anchors' "(libpq defaults)" variants are left out: they differ in the
timeouts that decide how fast a silent server is given up, and these
faults are loud (the old server closes its connections or is gone).
"""

from __future__ import annotations

import logging
import os
import platform
import statistics
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from benchmarks.failover import in_ms, median_or_none
from benchmarks.failover_kit import Writer
from benchmarks.failover_systems import DEFAULTS_SUFFIX
from benchmarks.failover_systems import make_failover_system
from benchmarks.interfaces import IFailoverSystem

__all__ = ['FULL', 'QUICK', 'FAULTS', 'PATHS', 'metric', 'systems_for',
           'run_patroni', 'add_results', 'summary', 'run_section']

FULL = dict(rounds=3, cap=45.0, pause=0.01, warm_units=3)
QUICK = dict(rounds=1, cap=45.0, pause=0.01, warm_units=2)
FAULTS = ('switchover', 'postmaster_kill')
PATHS = ('hosts', 'haproxy')
WORKLOAD = 'patroni'
Say = Callable[[str], None]


def metric(fault: str, path: str) -> str:
    """The results.json metric of ``fault`` through ``path``."""
    return 'patroni-%s-to-commit-%s' % (fault.replace('_', '-'), path)


def systems_for(names: Sequence[str]) -> List[str]:
    """The systems the section runs: the best recipes only."""
    return [n for n in names if not n.endswith(DEFAULTS_SUFFIX)]


def _label(member) -> str:
    # How a server names itself in a unit's result (see INSERT_SQL).
    return '%s:%s' % (member.host, member.port)


def _started_at(member, timeout: float = 60.0) -> float:
    """When ``member``'s running postmaster started, on the monotonic
    clock (PostgreSQL says it in wall-clock time).  Patroni's API may
    show a leader whose PostgreSQL is still in crash recovery: asked
    again until it answers."""
    from canonical.testing.cluster.interfaces import ClusterError
    deadline = time.monotonic() + timeout
    while True:
        try:
            wall = float(member.psql(
                'SELECT extract(epoch FROM pg_postmaster_start_time())'))
            return wall - (time.time() - time.monotonic())
        except ClusterError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _addresses(cluster, path: str) -> List[Tuple[str, int]]:
    if path == 'hosts':
        return [(m.host, m.port) for m in cluster.members]
    return [(cluster.haproxy.host, cluster.haproxy.port)]


def run_patroni(settings: dict, names: Sequence[str],
                say: Say = print) -> dict:
    """Every path and fault for the systems ``names``, on a cluster made
    and destroyed here; returns the figures (see add_results)."""
    from canonical.testing.cluster.patroni import PatroniCluster
    started = time.monotonic()
    say('patroni: starting etcd, three members and HAProxy')
    cluster = PatroniCluster(synchronous=True)
    try:
        cluster.start()
        say('patroni: cluster up in %.1f s' % cluster.started_in)
        figures = dict(samples={}, patroni={}, failed_attempts={},
                       fatal={}, healing=[], recipes={})
        for path in PATHS:
            _run_path(cluster, path, names, settings, figures, say)
        figures['started_in'] = cluster.started_in
        figures['seconds'] = time.monotonic() - started
        return figures
    finally:
        cluster.destroy()


def _run_path(cluster, path: str, names: Sequence[str], settings: dict,
              figures: dict, say: Say) -> None:
    """Every fault's rounds through ``path``, one writer per system."""
    from benchmarks import systems as S
    S.ZopelessSystem.close_current()    # the library installs itself once
    systems: List[IFailoverSystem] = []
    writers: List[Writer] = []
    try:
        for name in names:
            systems.append(make_failover_system(
                name, _addresses(cluster, path)))
        figures['recipes'].update({s.name: s.recipe for s in systems})
        writers = [Writer(s, pause=settings['pause']) for s in systems]
        for w in writers:
            w.start()
        for fault in FAULTS:
            key = metric(fault, path)
            for r in range(settings['rounds']):
                say('patroni: %s via %s, round %d/%d' % (
                    fault, path, r + 1, settings['rounds']))
                _warm(cluster, writers, settings)
                before = {w: dict(w.failure_kinds) for w in writers}
                found, patroni = _round(cluster, fault, writers, settings)
                figures['patroni'].setdefault(key, []).append(patroni)
                for w in writers:
                    name = w.system.name
                    figures['samples'].setdefault(key, {}).setdefault(
                        name, []).append(found[name])
                    kinds = figures['failed_attempts'].setdefault(
                        key, {}).setdefault(name, {})
                    for kind, count in w.failure_kinds.items():
                        count -= before[w].get(kind, 0)
                        if count:
                            kinds[kind] = kinds.get(kind, 0) + count
                done = _heal(cluster)
                if done:
                    figures['healing'].append('%s round %d: %s' % (
                        key, r + 1, '; '.join(done)))
        figures['fatal'].update({'%s via %s' % (w.system.name, path):
                                 repr(w.fatal) for w in writers
                                 if w.fatal is not None})
    finally:
        for w in writers:
            w.stop()
        for system in reversed(systems):
            system.close()


def _heal(cluster) -> List[str]:
    from canonical.testing.patroni import heal
    return heal(cluster)


def _warm(cluster, writers: Sequence[Writer], settings: dict,
          timeout: float = 60.0) -> None:
    """Wait until every writer committed a few units on the leader (a
    writer that cannot is found out by the round, as timed out)."""
    since = time.monotonic()
    server = _label(cluster.wait_leader())
    deadline = since + timeout
    for w in writers:
        w.wait(lambda w=w: len(w.commits_on(server, since)) >=
               settings['warm_units'], deadline)


def _round(cluster, fault: str, writers: Sequence[Writer],
           settings: dict) -> Tuple[Dict[str, Optional[float]], float]:
    """One fault; seconds from its start to each writer's first commit on
    the new leader (None: none within the cap), and Patroni's seconds."""
    from canonical.testing.patroni import inflict
    report = inflict(cluster, fault)
    new = cluster.member(report.new)
    t0 = report.began
    # The first unit the new leader's postmaster can have taken.
    since = max(t0, _started_at(new))
    server = _label(new)
    found = {}
    for w in writers:
        w.wait(lambda w=w: w.first_on(server, since) is not None,
               t0 + settings['cap'])
        first = w.first_on(server, since)
        found[w.system.name] = None if first is None else first - t0
    return found, report.patroni_seconds


# -- results ------------------------------------------------------------------

def add_results(results, figures: dict, settings: dict) -> None:
    """The figures as results.json entries (workload "patroni", times in
    ms, ratios to the library), Patroni's own time beside each."""
    for key, by_system in figures['samples'].items():
        patroni = figures['patroni'][key]
        path = key.rsplit('-', 1)[1]
        for name, samples in by_system.items():
            done = [s for s in samples if s is not None]
            fatal = figures['fatal'].get('%s via %s' % (name, path))
            results.add(
                name, WORKLOAD, key, in_ms(median_or_none(samples)), 'ms',
                floor='zopeless',
                min=in_ms(min(done)) if done else None,
                max=in_ms(max(samples)) if len(done) == len(samples) else None,
                rounds=len(samples), timed_out=len(samples) - len(done),
                cap_s=settings['cap'], samples_ms=[in_ms(s) for s in samples],
                patroni_median_ms=in_ms(statistics.median(patroni)),
                patroni_max_ms=in_ms(max(patroni)),
                patroni_samples_ms=[in_ms(p) for p in patroni],
                failed_attempts=sum(
                    figures['failed_attempts'][key][name].values()),
                failed_attempt_kinds=figures['failed_attempts'][key][name],
                fatal=fatal)


def summary(results) -> str:
    """Lines for the terminal: per fault and path, each system's median
    and max from the fault to its first commit on the new leader, and
    Patroni's own time (its API showing a writable leader) beside."""
    lines = ['Patroni (from the fault to the first commit on the new '
             'leader; Patroni: to its API showing a writable leader):',
             '  %-42s %-16s %9s %9s  %s' % ('metric', 'system', 'median',
                                            'max', 'Patroni median/max')]
    for e in results.entries:
        if e['workload'] != WORKLOAD:
            continue
        median = ('%.0f ms' % e['median'] if e['median'] is not None
                  else 'timed out')
        worst = '%.0f ms' % e['max'] if e.get('max') is not None else '-'
        extra = ' (%d rounds' % e['rounds']
        if e.get('timed_out'):
            extra += ', %d with no commit within %g s' % (e['timed_out'],
                                                         e['cap_s'])
        extra += ')'
        if e.get('fatal'):
            extra += '; THE WRITER STOPPED: %s' % e['fatal']
        lines.append('  %-42s %-16s %9s %9s  %.0f / %.0f ms%s' % (
            e['metric'], e['system'], median, worst, e['patroni_median_ms'],
            e['patroni_max_ms'], extra))
    return '\n'.join(lines)


def run_section(results, quick: bool, names: Sequence[str],
                say: Say = print) -> dict:
    """The section as bin/bench runs it: figures into ``results``; returns
    what results-meta.json keeps of the run."""
    settings = QUICK if quick else FULL
    started, load = time.time(), os.getloadavg()
    # The transaction package logs each failed second phase (an anchor's
    # COMMIT on a server going away) at CRITICAL; they are counted instead.
    txn = logging.getLogger('txn')
    level = txn.level
    txn.setLevel(logging.CRITICAL + 1)
    try:
        figures = run_patroni(settings, systems_for(names), say)
    finally:
        txn.setLevel(level)
    add_results(results, figures, settings)
    return dict(settings=settings, python=platform.python_version(),
                cpus=os.cpu_count(), started=started, loadavg_before=load,
                loadavg_after=os.getloadavg(), seconds=figures['seconds'],
                cluster_started_in=figures['started_in'],
                healing=figures['healing'], recipes=figures['recipes'],
                patroni_ms={k: [in_ms(p) for p in v]
                            for k, v in figures['patroni'].items()})
