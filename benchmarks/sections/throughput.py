"""Throughput of the four transactions (read/write, SQL/ORM), each system
against its floor."""

import statistics

from benchmarks.floor import FLOOR_SYSTEM
from benchmarks.registry import Section, register

__all__ = ['THROUGHPUT', 'FLOOR', 'throughput']

THROUGHPUT = ('read-sql', 'read-orm', 'write-sql', 'write-orm')
FLOOR = {'read-sql': 'raw-psycopg2', 'write-sql': 'raw-psycopg2',
         'read-orm': 'sqlobject-plain', 'write-orm': 'sqlobject-plain'}


def throughput(run, workloads, make, metric):
    """Rounds of ``workloads`` on the systems ``make(name)`` gives, added
    to the results as ``metric`` (also the network variant's runner)."""
    from benchmarks import systems as S
    from benchmarks import workloads as W
    settings = run.settings
    # The systems take turns in short slices within each round, so a
    # burst of other work on the machine hits all of them alike.
    for workload in workloads:
        names = [n for n in S.WORKLOAD_SYSTEMS[workload]
                 if n in run.available]
        rates, cpu = W.throughput_rounds(
            [make(n) for n in names], workload, settings['rounds'],
            settings['duration'], run.ids,
            progress=lambda r, w=workload: run.progress.step(
                '%s %s round %d/%d' % (metric, w, r + 1,
                                       settings['rounds'])))
        for name in names:
            run.results.add(name, workload, metric,
                            statistics.median(rates[name]), 'tx/s',
                            floor=FLOOR[workload], rounds=rates[name],
                            client_cpu_us_per_tx=cpu[name])


class Throughput(Section):
    name = 'throughput'
    order = 10
    keys = THROUGHPUT

    def steps(self, run):
        return run.settings['rounds'] * len(
            [w for w in THROUGHPUT if run.wanted(w)])

    def run(self, run):
        throughput(run, [w for w in THROUGHPUT if run.wanted(w)],
                   run.system, 'throughput')

    def targets(self, results):
        lines = []
        for wl, floor in (('read-sql', 'raw psycopg2'),
                          ('write-sql', 'raw psycopg2'),
                          ('read-orm', 'SQLObject alone'),
                          ('write-orm', 'SQLObject alone')):
            e = results.find('zopeless', wl, 'throughput')
            r = e and e['ratio']
            if r is None:
                continue
            line = '  %s %s: zopeless at %.0f%% of %s (target >= 100%%)' % (
                mark(r >= 1.0), wl, r * 100, floor)
            ceiling = results.find(FLOOR_SYSTEM, wl, 'throughput')
            if ceiling and ceiling['ratio'] is not None:
                # What the target allows at most in this run (floor.py).
                line += '; %s, the ceiling: %.0f%%' % (FLOOR_SYSTEM,
                                                      ceiling['ratio'] * 100)
            if wl.endswith('-orm'):
                sa = results.find('zope.sqlalchemy', wl, 'throughput')
                if sa:
                    ahead = e['median'] > sa['median']
                    line += '; %s zope.sqlalchemy (%.0f vs %.0f tx/s)' % (
                        'ahead of' if ahead else 'BEHIND', e['median'],
                        sa['median'])
            lines.append(line)
        return lines


def mark(ok):
    """The first word of a target line."""
    return 'met   ' if ok else 'MISSED'


register(Throughput())
