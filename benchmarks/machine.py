"""What a benchmark run ran on, so that two runs can be compared.

Loopback figures depend on the machine as much as on the code: on a
virtual machine with two vCPUs, a client whose server backend runs on the
same vCPU makes a round trip for a few microseconds of CPU, while one whose
backend runs on the other vCPU waits for a cross-CPU wake-up several times
as long (see the README).  The library saves round trips and spends Python
work, so its ratio to raw psycopg2 moves with that placement, with the
interpreter's build (a Python built without profile-guided optimisation
runs the library's Python slower, and raw psycopg2's C code not at all) and
with what else the machine runs.  ``describe()`` records those,
``round_trips()`` measures the two placements, and ``sample()`` /
``between()`` the load and the CPU time stolen by the hypervisor, before
and after the run.
"""

import os
import platform
import sys
import sysconfig
import time

__all__ = ['describe', 'sample', 'between', 'round_trips', 'summary']


def _read(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _cpuinfo():
    """(model name, MHz, whether a hypervisor is announced)."""
    model = mhz = None
    hypervisor = False
    for line in (_read('/proc/cpuinfo') or '').splitlines():
        key, _, value = line.partition(':')
        key, value = key.strip(), value.strip()
        if key == 'model name' and model is None:
            model = value
        elif key == 'cpu MHz' and mhz is None:
            mhz = float(value)
        elif key == 'flags' and 'hypervisor' in value.split():
            hypervisor = True
    return model, mhz, hypervisor


def _python_build():
    config = sysconfig.get_config_var('CONFIG_ARGS') or ''
    return {
        'implementation': platform.python_implementation(),
        'version': platform.python_version(),
        'build': ' '.join(platform.python_build()),
        'compiler': platform.python_compiler(),
        'executable': sys.executable,
        # Profile-guided optimisation and link-time optimisation make the
        # interpreter itself faster; a shared libpython makes calls into
        # it slower.  Distribution builds usually have the first two.
        'pgo': '--enable-optimizations' in config,
        'lto': '--with-lto' in config,
        'shared': bool(sysconfig.get_config_var('Py_ENABLE_SHARED')),
    }


def _drivers():
    import psycopg2
    import psycopg2.extensions
    libpq = psycopg2.extensions.libpq_version()
    return {'psycopg2': psycopg2.__version__.split()[0],
            'libpq': '%d.%d' % (libpq // 10000, libpq % 10000)}


def describe():
    """The machine, the interpreter and the drivers, as a dict."""
    model, mhz, hypervisor = _cpuinfo()
    return {
        'cpu_model': model,
        'cpu_mhz': mhz,
        'cpus': os.cpu_count(),
        'cpus_usable': len(os.sched_getaffinity(0)),
        'hypervisor': hypervisor,
        'governor': _read('/sys/devices/system/cpu/cpu0/cpufreq/'
                          'scaling_governor'),
        'kernel': platform.release(),
        'python': _python_build(),
        'drivers': _drivers(),
    }


def _cpu_ticks():
    """The first line of /proc/stat: CPU time of the whole machine by
    kind, in clock ticks (user nice system idle iowait irq softirq
    steal ...)."""
    line = (_read('/proc/stat') or '').splitlines()[:1]
    if not line or not line[0].startswith('cpu '):
        return None
    return [int(v) for v in line[0].split()[1:]]


def sample():
    """Load average and machine CPU counters now (see between())."""
    return {'loadavg': list(os.getloadavg()), 'ticks': _cpu_ticks()}


def between(before, after):
    """What the machine did between two sample()s: its load average at
    both ends, and the share of its CPU time that was busy, and stolen by
    the hypervisor (other virtual machines) meanwhile."""
    figures = {'loadavg_before': before['loadavg'],
               'loadavg_after': after['loadavg']}
    if before['ticks'] and after['ticks']:
        delta = [b - a for a, b in zip(before['ticks'], after['ticks'])]
        total = sum(delta) or 1
        idle = delta[3] + (delta[4] if len(delta) > 4 else 0)
        figures['busy_share'] = round(1 - idle / total, 3)
        if len(delta) > 7:
            figures['steal_share'] = round(delta[7] / total, 4)
    return figures


def round_trips(host, port, dbname, user, n=2000):
    """Microseconds of one round trip (``SELECT 1``, autocommit) with the
    calling thread and its server backend pinned to the same CPU, and to
    two different CPUs; None where they cannot be pinned (one CPU, or no
    permission).  Call it in a thread of its own: the pinning is the
    thread's, and the backend's ends with its connection."""
    import psycopg2
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None
    conn = psycopg2.connect(host=host, port=port, dbname=dbname, user=user)
    conn.autocommit = True
    backend = conn.info.backend_pid
    mine = os.sched_getaffinity(0)
    figures = {}
    try:
        cursor = conn.cursor()
        for label, theirs in (('same_cpu', cpus[0]), ('other_cpu', cpus[1])):
            os.sched_setaffinity(0, {cpus[0]})
            os.sched_setaffinity(backend, {theirs})
            for i in range(200):
                cursor.execute('SELECT 1')
            start = time.perf_counter()
            for i in range(n):
                cursor.execute('SELECT 1')
            figures[label] = round((time.perf_counter() - start) / n * 1e6,
                                   1)
    except OSError:
        return None
    finally:
        os.sched_setaffinity(0, mine)
        conn.close()
    return figures


def summary(machine, during=None):
    """One line for the report."""
    py = machine['python']
    parts = ['%s, %s CPUs%s' % (machine['cpu_model'] or '?', machine['cpus'],
                                ' (virtual)' if machine['hypervisor'] else ''),
             'governor %s' % (machine['governor'] or 'not readable'),
             'Python %s (%s%s%s, %s)' % (
                 py['version'], 'PGO' if py['pgo'] else 'no PGO',
                 ', LTO' if py['lto'] else '',
                 ', shared libpython' if py['shared'] else '',
                 py['compiler']),
             'psycopg2 %s, libpq %s' % (machine['drivers']['psycopg2'],
                                        machine['drivers']['libpq'])]
    trips = machine.get('round_trip_us')
    if trips:
        parts.append('round trip %.0f us with the backend on the same CPU, '
                     '%.0f us on another' % (trips['same_cpu'],
                                             trips['other_cpu']))
    if during:
        parts.append('load %.2f -> %.2f' % (during['loadavg_before'][0],
                                            during['loadavg_after'][0]))
        if 'busy_share' in during:
            parts.append('machine busy %.0f%%, stolen %.1f%%' % (
                during['busy_share'] * 100,
                during.get('steal_share', 0) * 100))
    return 'Machine: ' + '; '.join(parts)
