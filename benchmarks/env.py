"""What the benchmark runs against: the anchor packages, a throwaway
PostgreSQL cluster of its own, the sample database, and the moments the
server starts accepting connections.

Anchor packages (SQLAlchemy, zope.sqlalchemy, Storm) are benchmark-only:
they are installed with pip into ``var/bench-extras``, at the versions of
constraints.txt, the first time (and again when the pins change), and
appended to ``sys.path``, so the project's own eggs always win.  They stay
out of buildout, so that ``make test`` need not compile Storm.
"""

import hashlib
import importlib
import os
import re
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VAR = os.path.join(ROOT, 'var')
EXTRAS = os.path.join(VAR, 'bench-extras')
CONSTRAINTS = os.path.join(ROOT, 'constraints.txt')
CLUSTER_BASE = os.path.join(VAR, 'bench-cluster')
DBNAME = 'zopeless_bench'
DBUSER = 'launchpad'
EXTRA_ROWS = 6000           # person rows added for the memory workload
EXTRA_PACKAGES = ('SQLAlchemy', 'zope.sqlalchemy', 'storm')
READY_LINE = 'database system is ready to accept connections'


def _pip_command():
    venv_pip = os.path.join(ROOT, '.venv', 'bin', 'pip')
    candidates = [[sys.executable, '-m', 'pip']]
    if os.access(venv_pip, os.X_OK):
        candidates.append([venv_pip])
    return candidates


def _pins_stamp():
    with open(CONSTRAINTS, 'rb') as f:
        return hashlib.sha1(f.read()).hexdigest()


def _install_extras(log):
    """pip install the anchors into EXTRAS at the pinned versions."""
    stamp_file = os.path.join(EXTRAS, '.pins')
    try:
        with open(stamp_file) as f:
            if f.read() == _pins_stamp():
                return
    except OSError:
        pass
    log('installing %s into %s' % (', '.join(EXTRA_PACKAGES), EXTRAS))
    env = dict(os.environ, PIP_CONSTRAINT=CONSTRAINTS)
    for pip in _pip_command():
        result = subprocess.run(
            pip + ['install', '-q', '--disable-pip-version-check', '--upgrade',
                   '--target', EXTRAS] + list(EXTRA_PACKAGES),
            capture_output=True, text=True, env=env)
        if result.returncode == 0:
            with open(stamp_file, 'w') as f:
                f.write(_pins_stamp())
            break
    else:
        tail = (result.stderr or result.stdout).strip().splitlines()
        log('pip install failed: %s' % (tail[-1] if tail else '?'))
    importlib.invalidate_caches()


def ensure_extras(log=print):
    """Install the anchor packages into var/bench-extras unless current;
    put that directory at the end of sys.path.  Returns {package: error}
    for what could not be imported."""
    if EXTRAS not in sys.path:
        sys.path.append(EXTRAS)
    _install_extras(log)
    problems = {}
    for module in ('sqlalchemy', 'zope.sqlalchemy', 'storm',
                   'storm.zope.zstorm'):
        try:
            importlib.import_module(module)
        except Exception as e:  # an anchor that fails is reported, not fatal
            problems[module] = '%s: %s' % (type(e).__name__, e)
    return problems


class BenchCluster:
    """A private cluster under var/bench-cluster, restarted at will.

    Use it as a context manager: on leaving, the server is stopped if it
    was not running before, so a benchmark run leaves no server behind.
    """

    def __init__(self, base=CLUSTER_BASE):
        from canonical.testing.cluster import Cluster
        self.cluster = Cluster(base=base)
        self.started_here = not self.cluster.status()['running']
        self.cluster.start()
        self._configure_log()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def close(self):
        """Stop the server if this object started it."""
        if self.started_here:
            self.cluster.stop('fast')

    @property
    def host(self):
        return self.cluster.host

    @property
    def port(self):
        return self.cluster.port

    def _configure_log(self):
        # %n: Unix epoch with milliseconds, so "ready" lines carry a time
        # comparable with time.time().
        current = self.cluster.psql('SHOW log_line_prefix').strip()
        if not current.startswith('%n'):
            self.cluster.psql("ALTER SYSTEM SET log_line_prefix = '%n [%p] '")
            self.cluster.psql('SELECT pg_reload_conf()')
            time.sleep(0.2)

    def stop(self, mode='fast'):
        self.cluster.stop(mode)

    def start(self):
        """Start the stopped server on its port; returns the epoch time at
        which it logged that it accepts connections."""
        try:
            offset = os.path.getsize(self.cluster.logfile)
        except OSError:
            offset = 0
        with self.cluster._lock():
            self.cluster._start(keep_port=True)
        return self.ready_time(offset)

    def ready_time(self, offset, timeout=10.0):
        deadline = time.monotonic() + timeout
        pattern = re.compile(r'^(\d+\.\d+) .*' + READY_LINE)
        while True:
            with open(self.cluster.logfile, errors='replace') as f:
                f.seek(offset)
                for line in f:
                    m = pattern.match(line)
                    if m:
                        return float(m.group(1))
            if time.monotonic() > deadline:
                raise RuntimeError('no "%s" line in %s'
                                   % (READY_LINE, self.cluster.logfile))
            time.sleep(0.01)


def prepare_database(bench_cluster, log=print):
    """A fresh copy of the sample database, plus EXTRA_ROWS people."""
    from canonical.launchpad.ftests.harness import LaunchpadTestSetup
    setup = LaunchpadTestSetup(dbname=DBNAME, dbuser=DBUSER)
    setup.server = bench_cluster.cluster
    setup.setUp()
    conn = setup.connect()
    cur = conn.cursor()
    cur.execute(
        "INSERT INTO person (name, displayname) "
        "SELECT 'bench-row-' || g, 'Bench Row ' || g "
        "FROM generate_series(1, %s) g", (EXTRA_ROWS,))
    conn.commit()
    cur.execute('SELECT min(id), max(id), count(*) FROM person')
    low, high, count = cur.fetchone()
    conn.commit()
    conn.autocommit = True
    cur.execute('VACUUM ANALYZE person')
    setup.closeConnections()
    return setup, (low, high, count)


class ConnectCounter:
    """Wraps psycopg2.connect: every connection attempt of every system
    (the library, SQLAlchemy, Storm, the baselines) is timestamped."""

    def __init__(self):
        import psycopg2
        self._psycopg2 = psycopg2
        self._real = psycopg2.connect
        self.events = []   # (time.time(), thread ident, ok)
        self._lock = threading.Lock()

    def install(self):
        real = self._real
        events = self.events

        def connect(*args, **kw):
            ident = threading.get_ident()
            try:
                conn = real(*args, **kw)
            except Exception:
                events.append((time.time(), ident, False))
                raise
            events.append((time.time(), ident, True))
            return conn
        self._psycopg2.connect = connect

    def uninstall(self):
        self._psycopg2.connect = self._real

    def between(self, start, end):
        return [e for e in list(self.events) if start <= e[0] <= end]
