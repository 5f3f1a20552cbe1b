"""``bin/bench --profile``: where the library's read transactions spend
their time (cProfile)."""

import cProfile
import io
import pstats
import time

__all__ = ['profile_library']


def profile_library(zsystem, ids, seconds=2.0):
    """cProfile of the library's read transactions: where the time goes."""
    from benchmarks.workloads import in_thread
    out = io.StringIO()
    for workload in ('read-sql', 'read-orm'):
        def run():
            client = zsystem.client()
            op = (client.read_sql if workload == 'read-sql'
                  else client.read_orm)
            for i in range(50):
                op(ids[i % len(ids)])
            prof = cProfile.Profile()
            n = 0
            end = time.perf_counter() + seconds
            prof.enable()
            while time.perf_counter() < end:
                op(ids[n % len(ids)])
                n += 1
            prof.disable()
            return prof, n
        prof, n = in_thread(run, timeout=120)
        out.write('\n== cProfile, zopeless %s, %d transactions ==\n'
                  % (workload, n))
        stats = pstats.Stats(prof, stream=out)
        stats.sort_stats('tottime').print_stats(25)
    return out.getvalue()
