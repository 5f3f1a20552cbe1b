"""Resident memory per open connection and per 1,000 model instances.

Each system is measured in a fresh child process (``python -m
benchmarks.memory SYSTEM HOST PORT DBNAME USER``), so no system reuses
memory another freed.  Resident size comes from /proc/self/statm.
"""

import gc
import json
import os
import subprocess
import sys
import threading

CONNECTIONS = 20
INSTANCES = 5000


def rss():
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')


def _settle():
    gc.collect()
    return rss()


def measure(system_name, host, port, dbname, user):
    from benchmarks import env
    env.ensure_extras(log=lambda *a: None)
    from benchmarks.anchors import make_system
    from benchmarks.workloads import in_thread
    system = make_system(system_name, host, port, dbname, user)

    release = threading.Event()
    held = []

    def holder(ready):
        client = system.client()
        client.hold()
        held.append(client)
        ready.set()
        release.wait()

    def start_holder():
        ready = threading.Event()
        t = threading.Thread(target=holder, args=(ready,), daemon=True)
        t.start()
        ready.wait(60)
        return t

    # Warm: every module imported, every code path run once.
    threads = [start_holder()]
    before = _settle()
    threads += [start_holder() for _ in range(CONNECTIONS)]
    after = _settle()
    per_connection = (after - before) / CONNECTIONS

    keep = []

    def load():
        client = system.client()
        client.load_many(50)            # warm the loading code
        base = _settle()
        rows = client.load_many(INSTANCES)
        keep.append(rows)
        grown = _settle()
        return len(rows), grown - base, client
    count, grown, client = in_thread(load, timeout=120)
    per_thousand = grown / count * 1000
    release.set()
    return dict(system=system_name, per_connection=per_connection,
                per_1000_instances=per_thousand, instances=count,
                connections=CONNECTIONS)


def measure_in_child(system_name, host, port, dbname, user):
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(p for p in sys.path if p)
    result = subprocess.run(
        [sys.executable, '-m', 'benchmarks.memory', system_name, host,
         str(port), dbname, user],
        capture_output=True, text=True, env=env, timeout=300)
    lines = [l for l in result.stdout.splitlines() if l.startswith('{')]
    if result.returncode != 0 or not lines:
        tail = (result.stderr or result.stdout).strip().splitlines()
        raise RuntimeError('memory child for %s failed: %s' % (
            system_name, tail[-1] if tail else result.returncode))
    return json.loads(lines[-1])


if __name__ == '__main__':
    name, host, port, dbname, user = sys.argv[1:6]
    print(json.dumps(measure(name, host, int(port), dbname, user)))
    sys.stdout.flush()
    os._exit(0)   # parked threads and open connections: leave at once
