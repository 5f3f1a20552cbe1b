"""Read units on standbys: what the mechanism costs and what it gives.

``bin/python -m benchmarks.replicas [--seconds S] [--threads N]`` makes a
primary and two streaming standbys (the test kit's Servers) and reports:

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
import statistics
import threading
import time
from typing import Any, Dict, List, Optional

import transaction

__all__ = ['main', 'read_throughput', 'read_your_writes']


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


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--seconds', type=float, default=5.0)
    parser.add_argument('--threads', type=int, default=4)
    parser.add_argument('--rounds', type=int, default=200)
    args = parser.parse_args(argv)

    from canonical.database.policy import StandbyDatabasePolicy
    from canonical.lp import initZopeless
    from canonical.testing.failover import dbhost
    from canonical.testing.servers import ReplicationLayer, Servers
    ReplicationLayer.setUp()
    servers = Servers()
    try:
        primary = servers.primary('ra')
        standbys = [servers.standby(primary, 'rb'),
                    servers.standby(primary, 'rc')]
        cases = [('primary only, no policy', 0, None),
                 ('primary only, standby policy', 0, StandbyDatabasePolicy),
                 ('1 standby, standby policy', 1, StandbyDatabasePolicy),
                 ('2 standbys, standby policy', 2, StandbyDatabasePolicy)]
        rows = []
        for name, count, policy in cases:
            ztm = initZopeless(dbname='launchpad_ftest', dbuser='postgres',
                               dbhost=dbhost(primary, *standbys[:count]),
                               implicitBegin=False)
            read_throughput(ztm, policy, args.threads, 0.5)   # warm
            for threads in (1, args.threads):
                rows.append((name, threads, read_throughput(
                    ztm, policy, threads, args.seconds)))
            if count:
                ryw = read_your_writes(ztm, args.rounds)
            ztm.uninstall()
        base = {t: r['cpu_us_per_unit'] for n, t, r in rows
                if n == cases[0][0]}
        print('%-30s %7s %10s %14s %8s' % ('read units', 'threads',
                                           'units/s', 'CPU us/unit',
                                           'CPU x'))
        for name, threads, r in rows:
            print('%-30s %7d %10.0f %14.0f %8.2f' % (
                name, threads, r['units_per_s'], r['cpu_us_per_unit'],
                r['cpu_us_per_unit'] / base[threads]))
        print('read-your-writes (2 standbys): commit -> read seeing it: '
              'median %.2f ms, p90 %.2f ms; %d of %d reads on a standby'
              % (ryw['median_ms'], ryw['p90_ms'], ryw['on_standby'],
                 ryw['rounds']))
    finally:
        servers.close()
        ReplicationLayer.tearDown()


if __name__ == '__main__':
    main()
