"""``bin/bench --profile``: where the library's own microseconds go.

For each transaction kind, on the benchmark's cluster, in a thread of its
own (as the throughput workload runs it):

* the phases of a healthy transaction without a profiler: begin(), the
  statement (with its BEGIN), commit() (COMMIT and the ``transaction``
  package's bookkeeping), as medians in microseconds of wall time, with
  the client CPU time per transaction beside raw psycopg2's;
* cProfile aggregated over the same number of transactions, per
  function, filtered to the library (canonical.*), the ``transaction``
  package and psycopg2 (its C methods include waiting for the server;
  the library's poll() of the socket is counted there too), with the
  totals of each group.  cProfile adds about a microsecond to
  every Python call: compare two runs' tables, not a table with the
  phases.
"""

import cProfile
import io
import os
import pstats
import statistics
import time

from benchmarks.systems import SQL_READ, SQL_WRITE

__all__ = ['profile_library', 'GROUPS']

# Where a function's file (or a C method's description) says it belongs.
GROUPS = (('library', ('/canonical/',)),
          ('transaction', ('/transaction/',)),
          ('psycopg2', ('psycopg2', '/select.', "'poll'")))


def group_of(filename, name):
    """The group of a cProfile entry, or None for everything else."""
    where = filename + ' ' + name
    for group, marks in GROUPS:
        if any(mark in where for mark in marks):
            return group
    return None


def _steps(client, workload, ids):
    """The transaction split in its phases: (begin, statement, commit),
    each a callable taking the transaction's number."""
    from benchmarks.workloads import unique_name
    ztm = client.ztm
    if workload == 'read-sql':
        def statement(i):
            ztm.connection().execute(SQL_READ,
                                     (ids[i % len(ids)],)).fetchone()
    elif workload == 'write-sql':
        def statement(i):
            ztm.connection().execute(SQL_WRITE,
                                     (unique_name('zprof'), 'X'))
    else:
        Person = client.Person

        def statement(i):
            Person.get(ids[i % len(ids)]).name
    return (lambda i: ztm.begin()), statement, (lambda i: ztm.commit())


def _phases(client, workload, ids, n):
    begin, statement, commit = _steps(client, workload, ids)
    clock, cpu = time.perf_counter, time.thread_time
    samples = ([], [], [])
    c0 = cpu()
    for i in range(n):
        t0 = clock()
        begin(i)
        t1 = clock()
        statement(i)
        t2 = clock()
        commit(i)
        t3 = clock()
        samples[0].append(t1 - t0)
        samples[1].append(t2 - t1)
        samples[2].append(t3 - t2)
    per_tx = (cpu() - c0) / n * 1e6
    return [statistics.median(s) * 1e6 for s in samples], per_tx


def _raw_cpu(rsystem, workload, ids, n):
    from benchmarks.workloads import _operation
    client = rsystem.client()
    try:
        op = _operation(client, workload, rsystem.name, ids)
        for i in range(50):
            op(i)
        c0 = time.thread_time()
        for i in range(n):
            op(i)
        return (time.thread_time() - c0) / n * 1e6
    finally:
        client.close()


def _table(prof, n, out, rows=25):
    stats = pstats.Stats(prof).stats
    entries, totals = [], {}
    for (filename, line, name), (cc, calls, own, cum, _) in stats.items():
        group = group_of(filename, name)
        if group is None:
            continue
        totals[group] = totals.get(group, 0.0) + own
        where = name if filename == '~' else '%s:%d(%s)' % (
            filename.split('/src/')[-1].split('.egg/')[-1], line, name)
        entries.append((own, cum, calls, group, where))
    entries.sort(reverse=True)
    out.write('  %8s %8s %7s  %-11s %s\n' % ('own us', 'cum us', 'calls',
                                             'group', 'function'))
    for own, cum, calls, group, where in entries[:rows]:
        out.write('  %8.2f %8.2f %7.1f  %-11s %s\n' % (
            own / n * 1e6, cum / n * 1e6, calls / n, group, where))
    groups = ', '.join('%s %.1f us' % (g, totals.get(g, 0.0) / n * 1e6)
                       for g, _ in GROUPS)
    out.write('  own time per transaction by group (profiled): %s\n'
              % groups)


def profile_library(zsystem, ids, raw=None, transactions=3000,
                    workloads=('read-sql', 'write-sql', 'read-orm')):
    """The report of ``bin/bench --profile`` as text (see the module)."""
    from benchmarks.workloads import in_thread
    out = io.StringIO()
    for workload in workloads:
        def run():
            client = zsystem.client()
            steps = _steps(client, workload, ids)
            for i in range(100):
                for step in steps:
                    step(i)
            phases, cpu = _phases(client, workload, ids, transactions)
            prof = cProfile.Profile()
            begin, statement, commit = steps
            prof.enable()
            for i in range(transactions):
                begin(i)
                statement(i)
                commit(i)
            prof.disable()
            return phases, cpu, prof
        phases, cpu, prof = in_thread(run, timeout=300)
        floor = None
        if raw is not None and workload.endswith('-sql'):
            floor = in_thread(_raw_cpu, raw, workload, ids, transactions,
                              timeout=300)
        out.write('\n== zopeless %s, %d transactions (pid %d) ==\n'
                  % (workload, transactions, os.getpid()))
        out.write('  median wall us: begin() %.1f, statement %.1f, '
                  'commit() %.1f; client CPU %.1f us/tx%s\n' % (
                      phases[0], phases[1], phases[2], cpu,
                      '' if floor is None else
                      ' (raw psycopg2 %.1f)' % floor))
        _table(prof, transactions, out)
    return out.getvalue()
