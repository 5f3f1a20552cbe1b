"""Read units on standbys: what the mechanism costs and what it gives.

``bin/bench --only replicas`` (or ``bin/python -m benchmarks.replicas
[--quick]``) makes a primary and two streaming standbys (the test kit's
Servers) and reports:

* read throughput, units per second, of N threads each running read units
  (one ``Person.get()``, then commit), with the host list naming the
  primary alone (without a policy: today's path; and under
  StandbyDatabasePolicy, read-only on the primary), then the primary and
  one standby, then two standbys, under StandbyDatabasePolicy;
* client CPU per read unit (process CPU time, the sampler thread
  included, over units), against the path without a policy;
* read-your-writes: one thread commits a change, then at once runs a read
  unit under StandbyDatabasePolicy that must see it; the time from the
  commit's return to the read's, its median and 90th percentile, and how
  many of those reads ran on a standby (the rest fell back to the primary).

On a 2-core machine shared with the servers, throughput says little about
standbys' capacity; CPU per unit is the mechanism's cost.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import threading
import time
from typing import Any, Dict, List, Optional

import transaction

__all__ = ['main', 'measure', 'run_section', 'add_results', 'summary',
           'read_throughput', 'read_your_writes']


def read_throughput(ztm: Any, policy: Optional[type], threads: int,
                    seconds: float) -> Dict[str, float]:
    from canonical.launchpad.database import Person
    counts = [0] * threads
    stop = threading.Event()

    def worker(slot: int) -> None:
        i = 0
        while not stop.is_set():
            if policy is None:
                run_unit(ztm, Person, i)
            else:
                with policy():
                    run_unit(ztm, Person, i)
            i += 1
            counts[slot] += 1

    workers = [threading.Thread(target=worker, args=(n,))
               for n in range(threads)]
    cpu, started = time.process_time(), time.monotonic()
    for w in workers:
        w.start()
    stop.wait(seconds)
    stop.set()
    for w in workers:
        w.join(60)
    elapsed = time.monotonic() - started
    cpu = time.process_time() - cpu
    units = sum(counts)
    return {'units_per_s': units / elapsed,
            'cpu_us_per_unit': cpu / max(units, 1) * 1e6}


def run_unit(ztm: Any, model: Any, i: int) -> None:
    ztm.begin()
    model.get(1 + i % 10).name
    transaction.commit()


def read_your_writes(ztm: Any, rounds: int) -> Dict[str, float]:
    from canonical.database.policy import StandbyDatabasePolicy
    from canonical.launchpad.database import Person
    waits: List[float] = []
    on_standby = 0
    for i in range(rounds):
        ztm.begin()
        Person.get(4).karma = i
        transaction.commit()
        committed = time.monotonic()
        with StandbyDatabasePolicy():
            ztm.begin()
            seen = Person.get(4).karma
            standby = ztm._state().reader[0].standby
            transaction.commit()
        waits.append(time.monotonic() - committed)
        if seen != i:
            raise AssertionError('read %r after committing %r' % (seen, i))
        on_standby += standby is not None
    waits.sort()
    return {'median_ms': statistics.median(waits) * 1e3,
            'p90_ms': waits[int(len(waits) * 0.9)] * 1e3,
            'on_standby': on_standby, 'rounds': rounds}


CASES = [('zopeless-primary', 0, False),
         ('zopeless-primary-standby-policy', 0, True),
         ('zopeless-1-standby', 1, True),
         ('zopeless-2-standbys', 2, True)]
FULL = dict(seconds=5.0, threads=4, rounds=200)
QUICK = dict(seconds=1.5, threads=4, rounds=50)


def measure(settings: Dict[str, Any], say: Any = print) -> Dict[str, Any]:
    """Every case's figures on a primary and two standbys of its own."""
    from canonical.database.policy import StandbyDatabasePolicy
    from canonical.lp import initZopeless
    from canonical.testing.failover import dbhost
    from canonical.testing.servers import ReplicationLayer, Servers
    own_seed = ReplicationLayer.seed is None
    if own_seed:
        ReplicationLayer.setUp()
    servers = Servers()
    rows, ryw = [], None
    try:
        primary = servers.primary('ra')
        standbys = [servers.standby(primary, 'rb'),
                    servers.standby(primary, 'rc')]
        for name, count, standby_policy in CASES:
            say('replicas: %s' % name)
            policy = StandbyDatabasePolicy if standby_policy else None
            ztm = initZopeless(dbname='launchpad_ftest', dbuser='postgres',
                               dbhost=dbhost(primary, *standbys[:count]),
                               implicitBegin=False)
            try:
                read_throughput(ztm, policy, settings['threads'], 0.5)
                for threads in (1, settings['threads']):
                    rows.append((name, threads, read_throughput(
                        ztm, policy, threads, settings['seconds'])))
                if count == 2:
                    ryw = read_your_writes(ztm, settings['rounds'])
            finally:
                ztm.uninstall()
    finally:
        servers.close()
        if own_seed:
            ReplicationLayer.tearDown()
    return {'rows': rows, 'read_your_writes': ryw}


def add_results(results: Any, figures: Dict[str, Any]) -> None:
    """The figures as results.json entries (workload "replicas")."""
    for name, threads, r in figures['rows']:
        results.add(name, 'replicas', 'read-units-%d-threads' % threads,
                    round(r['units_per_s']), 'units/s',
                    floor='zopeless-primary')
        results.add(name, 'replicas', 'cpu-per-read-unit-%d-threads'
                    % threads, round(r['cpu_us_per_unit']), 'us',
                    floor='zopeless-primary')
    ryw = figures['read_your_writes']
    results.add('zopeless-2-standbys', 'replicas',
                'commit-to-read-seeing-it', round(ryw['median_ms'], 2),
                'ms', p95=None, p90=round(ryw['p90_ms'], 2),
                reads_on_standby=ryw['on_standby'], rounds=ryw['rounds'])


def summary(results: Any) -> str:
    lines = ['Read replicas (StandbyDatabasePolicy; ratios to the primary '
             'without a policy):']
    for e in results.entries:
        if e['workload'] != 'replicas':
            continue
        line = '  %-32s %-30s %8s %s' % (e['system'], e['metric'],
                                         e['median'], e['unit'])
        if e.get('ratio') is not None:
            line += '  x%.2f' % e['ratio']
        if 'reads_on_standby' in e:
            line += '  (p90 %s ms; %d of %d reads on a standby)' % (
                e['p90'], e['reads_on_standby'], e['rounds'])
        lines.append(line)
    return '\n'.join(lines)


def run_section(results: Any, quick: bool, say: Any = print) -> dict:
    """The section as bin/bench runs it: figures into ``results``; returns
    what results-meta.json keeps of the run."""
    settings = QUICK if quick else FULL
    started, load = time.time(), os.getloadavg()
    add_results(results, measure(settings, say))
    return dict(settings=settings, python=platform.python_version(),
                cpus=os.cpu_count(), started=started, loadavg_before=load,
                loadavg_after=os.getloadavg())


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--quick', action='store_true')
    args = parser.parse_args(argv)
    from benchmarks.report import Results
    results = Results()
    run_section(results, args.quick)
    results.compute_ratios()
    print(summary(results))


if __name__ == '__main__':
    main()
