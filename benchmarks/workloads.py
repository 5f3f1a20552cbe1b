"""The workloads: throughput, round trips, recovery and herd.

Every client runs in a thread of its own (see systems.py).
"""

import itertools
import os
import random
import statistics
import threading
import time

_names = itertools.count(1)
_RUN = '%x' % (int(time.time() * 1000) % 0xFFFFFF)


def unique_name(system):
    tag = ''.join(c for c in system if c.isalnum())[:6]
    return 'b%s-%s-%d-%d' % (tag, _RUN, os.getpid(), next(_names))


def in_thread(fn, *args, timeout=None):
    """Run fn(*args) in a new thread; return its result or raise its error.
    """
    box = {}

    def target():
        try:
            box['result'] = fn(*args)
        except BaseException as e:
            box['error'] = e
    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise TimeoutError('%s did not finish in %s s' % (fn, timeout))
    if 'error' in box:
        raise box['error']
    return box['result']


def percentile(values, q):
    values = sorted(values)
    if not values:
        return None
    k = (len(values) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


# -- throughput ----------------------------------------------------------------

def _operation(client, workload, system, ids):
    if workload == 'read-sql':
        return lambda i: client.read_sql(ids[i % len(ids)])
    if workload == 'read-orm':
        return lambda i: client.read_orm(ids[i % len(ids)])
    if workload == 'write-sql':
        return lambda i: client.write_sql(unique_name(system))
    if workload == 'write-orm':
        return lambda i: client.write_orm(unique_name(system))
    raise ValueError(workload)


def throughput_round(system, workload, duration, ids, warmup=20):
    """Transactions per second of one client over `duration` seconds."""
    def run():
        client = system.client()
        try:
            op = _operation(client, workload, system.name, ids)
            for i in range(warmup):
                op(i)
            n = 0
            clock = time.perf_counter
            start = clock()
            end = start + duration
            while True:
                for _ in range(10):
                    op(n)
                    n += 1
                now = clock()
                if now >= end:
                    break
            return n / (now - start)
        finally:
            client.close()
    return in_thread(run, timeout=duration * 10 + 60)


# -- round trips -------------------------------------------------------------------

def count_round_trips(system, workload, proxy, ids, n=20):
    """(round trips per transaction, statements of one transaction,
    connections per transaction)."""
    def run():
        client = system.client()
        try:
            op = _operation(client, workload, system.name, ids)
            for i in range(5):
                op(i)
            proxy.reset_counts()
            op(0)
            one = proxy.snapshot()['statements']
            proxy.reset_counts()
            accepted = proxy.accepted
            for i in range(n):
                op(i)
            figures = proxy.snapshot()
            return (figures['round_trips'] / n, one,
                    (figures['accepted'] - accepted) / n)
        finally:
            client.close()
    return in_thread(run, timeout=120)


# -- recovery ----------------------------------------------------------------------

class _Waiter(threading.Thread):
    """A client thread that runs resilient_read() whenever told to."""

    def __init__(self, system, pid, started=None):
        threading.Thread.__init__(self, daemon=True)
        self.system = system
        self.pid = pid
        self.go = threading.Event()
        self.done = threading.Event()
        self.ready = threading.Event()
        self.started_barrier = started
        self.finished_at = None
        self.error = None
        self.stop = False

    def run(self):
        try:
            client = self.system.client()
            client.read_orm(self.pid)       # connected and warm
        except BaseException as e:
            self.error = e
            self.ready.set()
            return
        self.ready.set()
        try:
            while True:
                self.go.wait()
                self.go.clear()
                if self.stop:
                    return
                client.resilient_read(self.pid)
                self.finished_at = time.time()
                self.done.set()
        except BaseException as e:
            self.error = e
            self.done.set()
        finally:
            try:
                client.close()
            except Exception:
                pass


def recovery(system, cluster, outages, down=0.3, progress=None):
    """Latencies (s) from the server accepting connections to a
    transaction, begun while it was down, completing."""
    waiter = _Waiter(system, 1)
    waiter.start()
    waiter.ready.wait(60)
    if waiter.error:
        raise waiter.error
    latencies = []
    try:
        for k in range(outages):
            if progress:
                progress('outage %d/%d' % (k + 1, outages))
            cluster.stop('fast')
            waiter.done.clear()
            waiter.go.set()
            # A random down time: a fixed one would lock the fixed-period
            # retry loops of the anchors into one phase with the restart.
            time.sleep(down + random.uniform(0, 0.1))
            ready = cluster.start()
            if not waiter.done.wait(30):
                raise TimeoutError('%s did not recover within 30 s'
                                   % system.name)
            if waiter.error:
                raise waiter.error
            latencies.append(waiter.finished_at - ready)
            time.sleep(0.1)
    finally:
        waiter.stop = True
        waiter.go.set()
        waiter.join(30)
    return latencies


# -- herd ----------------------------------------------------------------------------

def herd(system, cluster, counter, threads=50, outage=5.0):
    """50 clients wait through one outage.  Returns a dict of figures."""
    waiters = [_Waiter(system, 1 + i % 20) for i in range(threads)]
    for w in waiters:
        w.start()
    for w in waiters:
        w.ready.wait(60)
        if w.error:
            raise w.error
    library = getattr(system, 'coordinator', None)
    coordinator = library() if library else None
    try:
        cluster.stop('fast')
        down_at = time.time()
        before = coordinator.attempts if coordinator else None
        for w in waiters:
            w.done.clear()
            w.go.set()
        time.sleep(outage)
        ready = cluster.start()
        lib_attempts = (coordinator.attempts - before) if coordinator \
            else None
        for w in waiters:
            if not w.done.wait(60):
                raise TimeoutError('%s: a client did not recover' %
                                   system.name)
            if w.error:
                raise w.error
        window = counter.between(down_at, ready)
        elapsed = ready - down_at
        finished = [w.finished_at - ready for w in waiters]
        return dict(
            attempts=len(window),
            attempts_per_second=len(window) / elapsed,
            probing_threads=len({e[1] for e in window}),
            library_attempts=lib_attempts,
            outage_seconds=elapsed,
            all_done=max(finished),
            median_done=statistics.median(finished),
        )
    finally:
        for w in waiters:
            w.stop = True
            w.go.set()
        for w in waiters:
            w.join(30)
