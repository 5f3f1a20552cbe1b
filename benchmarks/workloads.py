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


class _Turns(threading.Thread):
    """One system's client, in a thread of its own, running transactions
    whenever it is given a turn."""

    def __init__(self, system, workload, ids, warmup):
        threading.Thread.__init__(self, daemon=True)
        self.system, self.workload = system, workload
        self.ids, self.warmup = ids, warmup
        self.turn = threading.Event()
        self.done = threading.Event()
        self.slice = 0.0
        self.stop = False
        self.error = None
        self.count, self.seconds, self.cpu = 0, 0.0, 0.0

    def run(self):
        try:
            client = self.system.client()
        except BaseException as e:
            self.error = e
            self.done.set()
            return
        try:
            op = _operation(client, self.workload, self.system.name, self.ids)
            for i in range(self.warmup):
                op(i)
            self.done.set()
            n = 0
            clock, cpu = time.perf_counter, time.thread_time
            while True:
                self.turn.wait()
                self.turn.clear()
                if self.stop:
                    return
                c0, start = cpu(), clock()
                end = start + self.slice
                while True:
                    for _ in range(5):
                        op(n)
                        n += 1
                    now = clock()
                    if now >= end:
                        break
                self.count = n
                self.seconds += now - start
                self.cpu += cpu() - c0
                self.done.set()
        except BaseException as e:
            self.error = e
            self.done.set()
        finally:
            client.close()

    def take_turn(self, seconds):
        self.done.clear()
        self.slice = seconds
        self.turn.set()
        if not self.done.wait(seconds * 10 + 60):
            raise TimeoutError('%s did not finish its turn' % self.system.name)
        if self.error is not None:
            raise self.error


def throughput_rounds(systems, workload, rounds, duration, ids, slices=20,
                      warmup=20, progress=None):
    """Transactions per second of each system, one figure per round.

    The systems take turns in short slices (``duration / slices`` seconds
    each, ``slices`` turns per round), so that a burst of other work on the
    machine falls on all of them alike.  Returns {name: [tx/s per round]}
    and {name: client CPU microseconds per transaction}.
    """
    turns = [_Turns(system, workload, ids, warmup) for system in systems]
    for t in turns:
        t.start()
    try:
        for t in turns:
            t.done.wait(120)
            if t.error is not None:
                raise t.error
        rates = {t.system.name: [] for t in turns}
        for r in range(rounds):
            if progress:
                progress(r)
            before = {t.system.name: (t.count, t.seconds) for t in turns}
            for k in range(slices):
                # Each system goes first in turn.
                for t in turns[k % len(turns):] + turns[:k % len(turns)]:
                    t.take_turn(duration / slices)
            for t in turns:
                count, seconds = before[t.system.name]
                rates[t.system.name].append(
                    (t.count - count) / (t.seconds - seconds))
        cpu = {t.system.name: t.cpu / max(t.count, 1) * 1e6 for t in turns}
        return rates, cpu
    finally:
        for t in turns:
            t.stop = True
            t.turn.set()
        for t in turns:
            t.join(30)


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
