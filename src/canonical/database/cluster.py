"""A private PostgreSQL cluster for demos, development and tests.

The cluster is built from the PostgreSQL server binaries installed on the
machine (found through ``pg_config --bindir``, ``PATH`` or
``/usr/lib/postgresql/*/bin``).  Its data directory, unix socket and log live
under the project's ``var/`` directory; it listens on 127.0.0.1 only, on a
free port that is recorded in ``var/cluster.json``.

Run it from the command line::

    bin/python -m canonical.database.cluster start|stop|status|env

or from Python::

    from canonical.database.cluster import ensure_cluster
    cluster = ensure_cluster()
    print(cluster.host, cluster.port, cluster.superuser)

When the caller is root the server runs as an unprivileged user (``postgres``
if it exists, otherwise a system user ``zopeless-pg`` created on demand).
When that user cannot reach the project directory, the cluster files are
kept under ``/var/tmp/zopeless-<hash>/`` instead and ``var/cluster.json``
records where.

When ``PGHOST`` or ``PGPORT`` name a server other than this cluster,
``ensure_cluster()`` describes that server instead of starting one.

This module uses the standard library only, so it also runs as a plain
script: ``python3 cluster.py --base DIR start``.
"""

import argparse
import contextlib
import errno
import fcntl
import getpass
import glob
import hashlib
import json
import os
import pwd
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

__all__ = [
    'ClusterError', 'BinariesNotFound', 'ExternalServerError',
    'Cluster', 'ExternalServer', 'ensure_cluster', 'find_bindir',
    'default_base', 'main',
]

HOST = '127.0.0.1'
SUPERUSER = 'postgres'
APP_ROLE = 'launchpad'
PASSWORD_ROLE = 'zopeless_pw'
PASSWORD_ROLE_PASSWORD = 'canary-secret-9'
UNPRIVILEGED_USER = 'zopeless-pg'
STATE_FILE = 'cluster.json'
LOCK_FILE = 'cluster.lock'
MIN_FREE_BYTES = 64 * 1024 * 1024
PORT_RANGE = (20000, 30000)
START_TIMEOUT = 60
# A unix socket path must fit in sun_path (108 bytes on Linux).
MAX_SOCKET_DIR = 80


class ClusterError(Exception):
    """The private PostgreSQL cluster could not be found, built or run."""


class BinariesNotFound(ClusterError):
    """No PostgreSQL server binaries were found on this machine."""


class ExternalServerError(ClusterError):
    """The operation needs the private cluster, but PG* names another server."""


# ---------------------------------------------------------------------------
# Locating things

def _repo_root():
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.normpath(os.path.join(here, os.pardir, os.pardir, os.pardir))
    if os.path.exists(os.path.join(root, 'setup.py')):
        return root
    return None


def default_base():
    """The directory holding the cluster state: ``$ZOPELESS_VAR`` or var/."""
    env = os.environ.get('ZOPELESS_VAR')
    if env:
        return os.path.abspath(env)
    root = _repo_root()
    if root is None:
        return os.path.abspath('var')
    return os.path.join(root, 'var')


def _version_key(bindir):
    parts = re.findall(r'\d+', os.path.basename(os.path.dirname(bindir)))
    return tuple(int(p) for p in parts)


def _has_server(bindir):
    return all(os.access(os.path.join(bindir, prog), os.X_OK)
               for prog in ('initdb', 'pg_ctl', 'postgres'))


def _candidate_bindirs():
    env = os.environ.get('ZOPELESS_PG_BINDIR')
    if env:
        # An explicit choice: look nowhere else.
        yield env
        return
    pg_config = shutil.which('pg_config')
    if pg_config:
        try:
            out = subprocess.run(
                [pg_config, '--bindir'], capture_output=True, text=True,
                timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            out = ''
        if out:
            yield out
    initdb = shutil.which('initdb')
    if initdb:
        yield os.path.dirname(os.path.realpath(initdb))
    for bindir in sorted(glob.glob('/usr/lib/postgresql/*/bin'),
                         key=_version_key, reverse=True):
        yield bindir
    yield '/usr/local/pgsql/bin'


def find_bindir(version=None):
    """The directory of the PostgreSQL server binaries.

    With ``version`` (a major version string such as '15'), prefer binaries
    of that version.  Raises BinariesNotFound when there are none.
    """
    found = [d for d in _candidate_bindirs() if _has_server(d)]
    if version is not None:
        for d in found:
            if _server_version(d).split('.')[0] == str(version):
                return d
        if found:
            raise ClusterError(
                'the cluster was created by PostgreSQL %s but only PostgreSQL '
                '%s binaries were found (%s); install version %s or remove '
                'the cluster' % (version, _server_version(found[0]),
                                 found[0], version))
    if found:
        return found[0]
    raise BinariesNotFound(
        'PostgreSQL server binaries not found (looked at pg_config --bindir, '
        'PATH and /usr/lib/postgresql/*/bin%s); install the Debian package '
        '"postgresql" or set ZOPELESS_PG_BINDIR'
        % (', ZOPELESS_PG_BINDIR' if os.environ.get('ZOPELESS_PG_BINDIR')
           else ''))


_versions = {}


def _server_version(bindir):
    if bindir not in _versions:
        try:
            out = subprocess.run(
                [os.path.join(bindir, 'postgres'), '--version'],
                capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            out = ''
        m = re.search(r'(\d+(?:\.\d+)?)', out)
        _versions[bindir] = m.group(1) if m else '0'
    return _versions[bindir]


def _clean_env():
    """Our environment without libpq settings that could redirect clients."""
    env = {k: v for k, v in os.environ.items() if not k.startswith('PG')}
    env['LC_ALL'] = 'C'
    env['LANG'] = 'C'
    return env


def _port_free(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        # PostgreSQL itself sets SO_REUSEADDR, so sockets in TIME_WAIT do
        # not keep it from binding; do the same here.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((HOST, port))
    except OSError:
        return False
    finally:
        s.close()
    return True


def _pick_port(avoid=()):
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(*PORT_RANGE)
        if port not in avoid and _port_free(port):
            return port
    raise ClusterError('no free TCP port found on %s in %d-%d'
                       % ((HOST,) + PORT_RANGE))


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie counts as dead.
    try:
        with open('/proc/%d/stat' % pid) as f:
            state = f.read().rsplit(')', 1)[1].split()[0]
        if state == 'Z':
            return False
    except (OSError, IndexError):
        pass
    return True


def _is_postgres(pid):
    """True when pid is a live PostgreSQL server process."""
    if not _pid_alive(pid):
        return False
    try:
        with open('/proc/%d/comm' % pid) as f:
            comm = f.read().strip()
    except FileNotFoundError:
        return False
    except OSError:
        return True  # no /proc to ask: trust the pid
    return comm in ('postgres', 'postmaster')


def _last_error(text):
    """The most useful line of PostgreSQL or initdb output."""
    lines = [l.strip() for l in text.splitlines() if l.strip()]
    for marker in ('No space left on device', 'FATAL', 'PANIC', 'ERROR',
                   'error', 'could not'):
        for line in reversed(lines):
            if marker in line:
                return line
    return lines[-1] if lines else 'no output'


def _atomic_write(path, text, mode=0o644):
    tmp = '%s.tmp%d' % (path, os.getpid())
    with open(tmp, 'w') as f:
        f.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _quote_conf(value):
    return "'%s'" % value.replace("'", "''")


# ---------------------------------------------------------------------------
# The private cluster

class Cluster:
    """A PostgreSQL cluster whose files live under ``base`` (default var/).

    ``fsync`` turns fsync on (default: off, or ``ZOPELESS_PG_FSYNC=on``).
    """

    external = False
    host = HOST
    superuser = SUPERUSER

    def __init__(self, base=None, fsync=None, bindir=None):
        self.base = os.path.abspath(base or default_base())
        self.state_path = os.path.join(self.base, STATE_FILE)
        self._fsync_explicit = fsync is not None or bool(
            os.environ.get('ZOPELESS_PG_FSYNC'))
        if fsync is None:
            fsync = os.environ.get('ZOPELESS_PG_FSYNC', '').lower() in (
                '1', 'on', 'true', 'yes')
        self.fsync = bool(fsync)
        self._bindir = bindir
        self._state = self._load_state()

    def __repr__(self):
        return '<Cluster %s:%s data=%s>' % (self.host, self.port, self.datadir)

    # -- state --------------------------------------------------------------

    def _load_state(self):
        try:
            with open(self.state_path) as f:
                return json.load(f)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            return {}

    def _save_state(self):
        os.makedirs(self.base, exist_ok=True)
        _atomic_write(self.state_path,
                      json.dumps(self._state, indent=2, sort_keys=True) + '\n')

    @contextlib.contextmanager
    def _lock(self):
        os.makedirs(self.base, exist_ok=True)
        fd = os.open(os.path.join(self.base, LOCK_FILE),
                     os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._state = self._load_state()
            yield
        finally:
            os.close(fd)

    # -- layout -------------------------------------------------------------

    @property
    def area(self):
        """The directory holding data/, run/ and server.log."""
        return self._state.get('area') or os.path.join(self.base, 'pg')

    @property
    def datadir(self):
        return os.path.join(self.area, 'data')

    @property
    def rundir(self):
        """The unix socket directory."""
        return self._state.get('rundir') or os.path.join(self.area, 'run')

    @property
    def logfile(self):
        return os.path.join(self.area, 'server.log')

    @property
    def port(self):
        return self._state.get('port')

    @property
    def runas(self):
        """The OS user the server runs as, or None for the caller."""
        return self._state.get('runas')

    @property
    def bindir(self):
        if self._bindir is None:
            recorded = self._state.get('bindir')
            if recorded and _has_server(recorded):
                self._bindir = recorded
            else:
                version = None
                try:
                    with open(os.path.join(self.datadir, 'PG_VERSION')) as f:
                        version = f.read().strip()
                except OSError:
                    pass
                self._bindir = find_bindir(version)
        return self._bindir

    def is_initialised(self):
        return os.path.exists(os.path.join(self.area, 'initialised'))

    # -- running commands as the server user ---------------------------------

    def _user_kwargs(self):
        if os.geteuid() != 0:
            return {}
        if self.runas is not None:
            pw = pwd.getpwnam(self.runas)
            return dict(user=pw.pw_uid, group=pw.pw_gid, extra_groups=[])
        # Root controlling a cluster that an ordinary user created.
        try:
            st = os.stat(self.area)
        except OSError:
            return {}
        if st.st_uid == 0:
            return {}
        return dict(user=st.st_uid, group=st.st_gid, extra_groups=[])

    def _run(self, argv, check=False, timeout=None, **kw):
        kwargs = dict(capture_output=True, text=True, env=_clean_env(),
                      cwd=self.area if os.path.isdir(self.area) else '/')
        kwargs.update(self._user_kwargs())
        kwargs.update(kw)
        try:
            result = subprocess.run(argv, timeout=timeout, **kwargs)
        except subprocess.TimeoutExpired:
            raise ClusterError('%s timed out after %s s'
                               % (os.path.basename(argv[0]), timeout))
        except OSError as e:
            raise ClusterError('cannot run %s: %s' % (argv[0], e.strerror))
        if check and result.returncode != 0:
            raise ClusterError('%s failed: %s' % (
                os.path.basename(argv[0]),
                _last_error(result.stderr + result.stdout)))
        return result

    def pg_ctl(self, *args, **kw):
        """Run pg_ctl on this cluster; returns the CompletedProcess."""
        return self._run([os.path.join(self.bindir, 'pg_ctl'),
                          '-D', self.datadir] + list(args), **kw)

    def psql(self, sql, dbname='postgres', user=None, check=True):
        """Run SQL through psql over the unix socket; returns stdout."""
        psql = os.path.join(self.bindir, 'psql')
        if not os.access(psql, os.X_OK):
            psql = shutil.which('psql') or psql
        result = self._run(
            [psql, '-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1',
             '-h', self.rundir, '-p', str(self.port),
             '-U', user or self.superuser, '-d', dbname, '-c', sql],
            check=check, timeout=60)
        return result.stdout

    def _chown(self, path):
        kw = self._user_kwargs()
        if kw:
            os.chown(path, kw['user'], kw['group'])

    # -- initialisation ------------------------------------------------------

    def _choose_runas(self):
        if os.geteuid() != 0:
            return None
        wanted = os.environ.get('ZOPELESS_PG_USER')
        names = [wanted] if wanted else ['postgres', UNPRIVILEGED_USER]
        for name in names:
            try:
                pwd.getpwnam(name)
                return name
            except KeyError:
                pass
        name = names[-1]
        useradd = shutil.which('useradd') or '/usr/sbin/useradd'
        try:
            result = subprocess.run(
                [useradd, '--system', '--user-group', '--no-create-home',
                 '--home-dir', '/nonexistent', '--shell', '/usr/sbin/nologin',
                 name], capture_output=True, text=True)
        except OSError as e:
            raise ClusterError('cannot create user %s: %s' % (name, e))
        if result.returncode not in (0, 9):  # 9: already exists (a race)
            raise ClusterError('cannot create user %s: %s'
                               % (name, _last_error(result.stderr)))
        return name

    def _user_can_reach(self, user, path):
        pw = pwd.getpwnam(user)
        try:
            result = subprocess.run(
                ['/bin/sh', '-c', 'cd "$1"', 'sh', path], cwd='/',
                user=pw.pw_uid, group=pw.pw_gid, extra_groups=[],
                capture_output=True)
        except OSError:
            return False
        return result.returncode == 0

    def _plan_layout(self):
        """Decide, once, where the files go and who runs the server."""
        os.makedirs(self.base, exist_ok=True)
        if 'area' in self._state and 'runas' in self._state:
            return
        runas = self._choose_runas()
        area = os.path.join(self.base, 'pg')
        if runas is not None and not self._user_can_reach(runas, self.base):
            digest = hashlib.sha1(
                os.path.realpath(self.base).encode()).hexdigest()[:10]
            area = os.path.join('/var/tmp', 'zopeless-' + digest)
        rundir = os.path.join(area, 'run')
        if len(rundir) > MAX_SOCKET_DIR:
            digest = hashlib.sha1(area.encode()).hexdigest()[:10]
            rundir = os.path.join('/tmp', 'zopeless-run-' + digest)
        self._state.update(area=area, rundir=rundir, runas=runas)
        self._save_state()

    def _mkdir_owned(self, path, mode):
        os.makedirs(path, mode=mode, exist_ok=True)
        os.chmod(path, mode)
        self._chown(path)

    def initialise(self):
        """Create the cluster (initdb) unless that was already done."""
        self._plan_layout()
        if self.is_initialised():
            return False
        bindir = self.bindir
        parent = os.path.dirname(self.area)
        os.makedirs(parent, exist_ok=True)
        free = shutil.disk_usage(parent).free
        needed = MIN_FREE_BYTES
        with contextlib.suppress(KeyError, ValueError):
            needed = int(os.environ['ZOPELESS_PG_MIN_FREE_MB']) * 2**20
        if free < needed:
            raise ClusterError(
                'disk full: only %d MB free in %s, the cluster needs %d MB'
                % (free // 2**20, parent, needed // 2**20))
        if os.path.dirname(self.area) != self.base:
            # An area outside the project, e.g. under /var/tmp.
            os.makedirs(self.area, mode=0o755, exist_ok=True)
        self._mkdir_owned(self.area, 0o755)
        self._mkdir_owned(self.rundir, 0o755)
        tmp = self.datadir + '.initdb'
        if os.path.exists(tmp):
            shutil.rmtree(tmp)
        if os.path.exists(self.datadir):
            # Left by an interrupted initialisation.
            shutil.rmtree(self.datadir)
        result = self._run(
            [os.path.join(bindir, 'initdb'), '-D', tmp, '-U', SUPERUSER,
             '-A', 'trust', '-E', 'UTF8', '--locale=C', '--no-sync'],
            timeout=300)
        if result.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            reason = _last_error(result.stderr + result.stdout)
            if 'No space left' in reason:
                raise ClusterError('disk full: initdb failed: %s' % reason)
            raise ClusterError('initdb failed: %s' % reason)
        scram = float(_server_version(bindir).split('.')[0]) >= 10
        method = 'scram-sha-256' if scram else 'md5'
        with open(os.path.join(tmp, 'postgresql.conf'), 'a') as f:
            f.write('\n# Settings of the private cluster '
                    '(canonical.database.cluster)\n')
            f.write('listen_addresses = %s\n' % _quote_conf(HOST))
            f.write('unix_socket_directories = %s\n'
                    % _quote_conf(self.rundir))
            f.write('max_connections = 300\n')
            f.write('max_prepared_transactions = 100\n')
            f.write("lc_messages = 'C'\n")
            f.write('logging_collector = off\n')
            if scram:
                f.write("password_encryption = 'scram-sha-256'\n")
            f.write("include_if_exists = 'zopeless.conf'\n")
        hba = (
            '# Written by canonical.database.cluster\n'
            'local all all trust\n'
            'host all {pw} 127.0.0.1/32 {m}\n'
            'host all {pw} ::1/128 {m}\n'
            'host all all 127.0.0.1/32 trust\n'
            'host all all ::1/128 trust\n'
        ).format(pw=PASSWORD_ROLE, m=method)
        with open(os.path.join(tmp, 'pg_hba.conf'), 'w') as f:
            f.write(hba)
        os.rename(tmp, self.datadir)
        self._state.update(bindir=bindir, roles=False)
        self._save_state()
        marker = os.path.join(self.area, 'initialised')
        with open(marker, 'w') as f:
            f.write(_server_version(bindir) + '\n')
        return True

    def _write_conf(self, port):
        """Write the per-start settings; True when the file changed."""
        path = os.path.join(self.datadir, 'zopeless.conf')
        text = ('# Rewritten at each start by canonical.database.cluster\n'
                'port = %d\nfsync = %s\n'
                % (port, 'on' if self.fsync else 'off'))
        try:
            with open(path) as f:
                if f.read() == text:
                    return False
        except OSError:
            pass
        _atomic_write(path, text, 0o600)
        self._chown(path)
        return True

    # -- the server process -------------------------------------------------

    def _postmaster_pid(self):
        """(pid, port) of a live server for this data directory, or None."""
        try:
            with open(os.path.join(self.datadir, 'postmaster.pid')) as f:
                lines = f.read().splitlines()
            pid = int(lines[0])
        except (OSError, ValueError, IndexError):
            return None
        if not _is_postgres(pid):
            return None
        try:
            port = int(lines[3])
        except (ValueError, IndexError):
            port = self.port
        return pid, port

    def is_running(self):
        return self._postmaster_pid() is not None

    @property
    def pid(self):
        found = self._postmaster_pid()
        return found[0] if found else None

    def _clear_stale(self):
        """Remove lock files left by a server that is gone."""
        pidfile = os.path.join(self.datadir, 'postmaster.pid')
        if os.path.exists(pidfile) and self._postmaster_pid() is None:
            os.unlink(pidfile)
        for lock in glob.glob(os.path.join(self.rundir, '.s.PGSQL.*.lock')):
            try:
                with open(lock) as f:
                    pid = int(f.readline().strip())
            except (OSError, ValueError):
                pid = None
            if pid is None or not _is_postgres(pid):
                with contextlib.suppress(OSError):
                    os.unlink(lock)
                with contextlib.suppress(OSError):
                    os.unlink(lock[:-len('.lock')])

    def start(self):
        """Start the cluster (initialising it first); reuse a running one."""
        with self._lock():
            found = self._postmaster_pid() if self.is_initialised() else None
            if found is not None:
                if found[1] != self.port:
                    self._state['port'] = found[1]
                    self._save_state()
                if self._fsync_explicit and self._write_conf(found[1]):
                    self.pg_ctl('reload', check=True, timeout=30)
                self._ensure_roles()
                return self
            self.initialise()
            self._start(keep_port=False)
            self._ensure_roles()
        return self

    def _start(self, keep_port):
        tried = set()
        port = self.port
        deadline = time.monotonic() + 15
        while True:
            if not keep_port and (port is None or port in tried
                                  or not _port_free(port)):
                port = _pick_port(avoid=tried)
            self._clear_stale()
            self._write_conf(port)
            try:
                offset = os.path.getsize(self.logfile)
            except OSError:
                offset = 0
            result = self.pg_ctl(
                'start', '-w', '-t', str(START_TIMEOUT), '-s',
                '-l', self.logfile, timeout=START_TIMEOUT + 30,
                start_new_session=True)
            if result.returncode == 0 and self._postmaster_pid():
                self._state['port'] = port
                self._save_state()
                return
            log = ''
            with contextlib.suppress(OSError):
                with open(self.logfile, errors='replace') as f:
                    f.seek(offset)
                    log = f.read()
            reason = _last_error(log or result.stderr + result.stdout)
            if 'already in use' in log or 'could not create any TCP' in log:
                if keep_port:
                    raise ClusterError('port %s is taken by another program; '
                                       'cannot restart there' % port)
                tried.add(port)
                if len(tried) < 5:
                    continue
            elif ('shared memory block' in log or 'lock file' in log
                  or 'is another postmaster' in log) and \
                    time.monotonic() < deadline:
                # Children of a killed server still hold its resources.
                time.sleep(0.2)
                continue
            if 'No space left' in log + result.stderr:
                raise ClusterError('disk full: PostgreSQL failed to start: '
                                   '%s' % reason)
            raise ClusterError('PostgreSQL failed to start: %s (log: %s)'
                               % (reason, self.logfile))

    def _ensure_roles(self):
        if self._state.get('roles'):
            return
        self.psql(
            "DO $$ BEGIN "
            "IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{app}') "
            "THEN CREATE ROLE {app} LOGIN CREATEDB SUPERUSER; END IF; "
            "IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{pw}') "
            "THEN CREATE ROLE {pw} LOGIN PASSWORD '{secret}'; END IF; "
            "END $$;".format(app=APP_ROLE, pw=PASSWORD_ROLE,
                             secret=PASSWORD_ROLE_PASSWORD))
        self._state['roles'] = True
        self._save_state()

    def stop(self, mode='fast'):
        """Stop the server (mode: smart, fast or immediate).

        Returns True when a server was stopped, False when none ran.
        """
        if mode not in ('smart', 'fast', 'immediate'):
            raise ValueError('mode must be smart, fast or immediate')
        with self._lock():
            if not self.is_initialised():
                return False
            if self._postmaster_pid() is None:
                self._clear_stale()
                return False
            result = self.pg_ctl('stop', '-w', '-t', str(START_TIMEOUT),
                                 '-s', '-m', mode, timeout=START_TIMEOUT + 30)
            if result.returncode != 0 and self._postmaster_pid():
                raise ClusterError('pg_ctl stop failed: %s' % _last_error(
                    result.stderr + result.stdout))
            return True

    def restart(self, mode='fast'):
        """Stop (with mode) and start again on the same port."""
        self.stop(mode)
        with self._lock():
            self.initialise()
            self._start(keep_port=self.port is not None)
        return self

    def kill(self, sig=signal.SIGKILL):
        """Send sig to the postmaster (a crash, for fault tests)."""
        pid = self.pid
        if pid is None:
            raise ClusterError('the cluster is not running')
        os.kill(pid, sig)
        return pid

    def destroy(self):
        """Stop the server at once and delete every file of the cluster."""
        with contextlib.suppress(ClusterError):
            self.stop('immediate')
        for path in (self.area, self.rundir):
            shutil.rmtree(path, ignore_errors=True)
        for name in (STATE_FILE, LOCK_FILE):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(self.base, name))
        self._state = {}

    # -- describing ---------------------------------------------------------

    def dsn(self, dbname='postgres', user=None):
        return 'host=%s port=%s user=%s dbname=%s' % (
            self.host, self.port, user or self.superuser, dbname)

    def env_lines(self):
        return ['export PGHOST=%s' % self.host,
                'export PGPORT=%s' % self.port,
                'export PGUSER=%s' % self.superuser]

    def status(self):
        found = self._postmaster_pid() if self.is_initialised() else None
        return dict(
            external=False, running=found is not None,
            initialised=self.is_initialised(), host=self.host,
            port=found[1] if found else self.port,
            pid=found[0] if found else None, superuser=self.superuser,
            datadir=self.datadir, rundir=self.rundir, logfile=self.logfile,
            runas=self.runas)


class ExternalServer:
    """An existing PostgreSQL server named by PGHOST/PGPORT."""

    external = True
    datadir = None

    def __init__(self, host=None, port=None, superuser=None):
        self.host = host or os.environ.get('PGHOST') or 'localhost'
        self.port = int(port or os.environ.get('PGPORT') or 5432)
        self.superuser = (superuser or os.environ.get('PGUSER')
                          or getpass.getuser())

    def __repr__(self):
        return '<ExternalServer %s:%s>' % (self.host, self.port)

    @property
    def bindir(self):
        try:
            return find_bindir()
        except ClusterError:
            return None

    def is_running(self):
        if self.host.startswith('/'):
            family = socket.AF_UNIX
            address = os.path.join(self.host, '.s.PGSQL.%d' % self.port)
        else:
            family, address = socket.AF_INET, (self.host, self.port)
            if ':' in self.host:
                family = socket.AF_INET6
        s = socket.socket(family, socket.SOCK_STREAM)
        s.settimeout(3)
        try:
            s.connect(address)
        except OSError:
            return False
        finally:
            s.close()
        return True

    def _unsupported(self, *args, **kw):
        raise ExternalServerError(
            'PGHOST/PGPORT name an existing server (%s:%s), which this '
            'module does not control; unset them to use the private cluster'
            % (self.host, self.port))

    start = stop = restart = pg_ctl = kill = destroy = _unsupported

    def dsn(self, dbname='postgres', user=None):
        return 'host=%s port=%s user=%s dbname=%s' % (
            self.host, self.port, user or self.superuser, dbname)

    def env_lines(self):
        return ['export PGHOST=%s' % self.host,
                'export PGPORT=%s' % self.port,
                'export PGUSER=%s' % self.superuser]

    def status(self):
        return dict(external=True, running=self.is_running(),
                    host=self.host, port=self.port, superuser=self.superuser)


def _external_from_env(cluster):
    """An ExternalServer when PG* names a server other than cluster."""
    host = os.environ.get('PGHOST')
    port = os.environ.get('PGPORT')
    if not host and not port:
        return None
    ours_host = host in (None, '', HOST, 'localhost', cluster.rundir)
    ours_port = cluster.port is not None and str(port or 5432) == str(
        cluster.port)
    if ours_host and ours_port:
        return None
    return ExternalServer(host, port)


def ensure_cluster(base=None, fsync=None):
    """The database server to use, started if it is the private cluster."""
    cluster = Cluster(base, fsync=fsync)
    external = _external_from_env(cluster) if base is None else None
    if external is not None:
        return external
    return cluster.start()


# ---------------------------------------------------------------------------
# Command line

def main(argv=None):
    parser = argparse.ArgumentParser(
        prog='python -m canonical.database.cluster',
        description='Run the private PostgreSQL cluster of this project.')
    parser.add_argument('command', choices=['start', 'stop', 'status', 'env'])
    parser.add_argument('--base', help='state directory (default: var/)')
    parser.add_argument('--mode', default='fast',
                        choices=['smart', 'fast', 'immediate'],
                        help='shutdown mode for stop')
    parser.add_argument('--fsync', action='store_true', default=None,
                        help='run with fsync=on (default off)')
    args = parser.parse_args(argv)
    try:
        cluster = Cluster(args.base, fsync=args.fsync)
        external = _external_from_env(cluster) if args.base is None else None
        if args.command == 'start':
            if external is not None:
                external.start()
            cluster.start()
            print('cluster running on %s:%s (data: %s)'
                  % (cluster.host, cluster.port, cluster.datadir))
        elif args.command == 'stop':
            if external is not None:
                external.stop()
            if cluster.stop(args.mode):
                print('cluster stopped')
            else:
                print('cluster was not running')
        elif args.command == 'status':
            if external is not None:
                st = external.status()
                print('external server %s:%s (%s)' % (
                    st['host'], st['port'],
                    'accepting connections' if st['running']
                    else 'not reachable'))
                return 0 if st['running'] else 3
            st = cluster.status()
            if not st['initialised']:
                print('not initialised (run: start)')
                return 3
            if st['running']:
                print('running on %s:%s pid %s (data: %s, log: %s)' % (
                    st['host'], st['port'], st['pid'], st['datadir'],
                    st['logfile']))
                return 0
            print('stopped (data: %s)' % st['datadir'])
            return 3
        elif args.command == 'env':
            server = external if external is not None else cluster.start()
            for line in server.env_lines():
                print(line)
    except ClusterError as e:
        print('cluster: error: %s' % e, file=sys.stderr)
        return 1
    except OSError as e:
        where = ' (%s)' % e.filename if e.filename else ''
        if e.errno == errno.ENOSPC:
            print('cluster: error: disk full%s' % where, file=sys.stderr)
        else:
            print('cluster: error: %s%s' % (e.strerror or e, where),
                  file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == '__main__':
    sys.exit(main())
