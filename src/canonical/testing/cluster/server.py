"""The private cluster: initialising, starting and stopping its server."""

import contextlib
import glob
import os
import shutil
import signal
import subprocess
import time
from typing import Optional, Tuple

from . import conf
from .binaries import find_bindir, has_server, server_version
from .interfaces import ClusterError, IClusterServer, INetworkHost
from .interfaces import implementer
from .layout import LOCK_FILE, STATE_FILE, SUPERUSER
from .layout import pick_port, port_free
from .netns import netns_command
from .process import clean_env, is_postgres, last_error
from .settings import NodeSettings

__all__ = ['Cluster']

MIN_FREE_BYTES = 64 * 1024 * 1024
START_TIMEOUT = 60


@implementer(IClusterServer)
class Cluster(NodeSettings):
    """A PostgreSQL cluster whose files live under ``base`` (default var/).

    ``fsync`` turns fsync on (default: off, or ``ZOPELESS_PG_FSYNC=on``).
    """

    external = False
    superuser = SUPERUSER

    def __init__(self, base: Optional[str] = None,
                 fsync: Optional[bool] = None, bindir: Optional[str] = None,
                 netns: Optional[INetworkHost] = None):
        # Only an explicit choice may change the setting of a running server.
        self._fsync_explicit = fsync is not None or bool(
            os.environ.get('ZOPELESS_PG_FSYNC'))
        if fsync is None:
            fsync = os.environ.get('ZOPELESS_PG_FSYNC', '').lower() in (
                '1', 'on', 'true', 'yes')
        self.fsync = bool(fsync)
        self._bindir = bindir
        super().__init__(base)
        if netns is not None:
            self._place_in(netns)

    def _place_in(self, netns: INetworkHost) -> None:
        """Run the server inside ``netns``, listening on its address."""
        with self._lock():
            if self._postmaster_pid() is not None and \
                    self.netns != netns.name:
                raise ClusterError('%r runs elsewhere; stop it first' % self)
            self._state.update(netns=netns.name, host=netns.address)
            settings = self.settings()
            settings['listen_addresses'] = netns.address
            self._state['settings'] = settings
            networks = list(self._state.get('networks') or ())
            if netns.network not in networks:
                networks.append(netns.network)
            self._state['networks'] = networks
            self._save_state()

    def __repr__(self):
        return '<Cluster %s:%s data=%s>' % (self.host, self.port, self.datadir)

    @property
    def bindir(self) -> str:
        if self._bindir is None:
            recorded = self._state.get('bindir')
            if recorded and has_server(recorded):
                self._bindir = recorded
            else:
                # The data directory can only be run by its major version.
                version = None
                try:
                    with open(os.path.join(self.datadir, 'PG_VERSION')) as f:
                        version = f.read().strip()
                except OSError:
                    pass
                self._bindir = find_bindir(version)
        return self._bindir

    # -- running commands as the server user ---------------------------------

    def _run(self, argv, check=False, timeout=None, in_netns=False, **kw):
        kwargs = dict(capture_output=True, text=True, env=clean_env(),
                      cwd=self.area if os.path.isdir(self.area) else '/')
        user = self._user_kwargs()
        if in_netns and self.netns:
            # Entering a namespace needs root: the switch to the server
            # user happens inside, after entering it.
            argv = netns_command(self.netns, argv, user.get('user'),
                                 user.get('group'))
        else:
            kwargs.update(user)
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
                last_error(result.stderr + result.stdout)))
        return result

    def pg_ctl(self, *args, **kw) -> subprocess.CompletedProcess:
        """Run pg_ctl on this cluster; returns the CompletedProcess."""
        return self._run([os.path.join(self.bindir, 'pg_ctl'),
                          '-D', self.datadir] + list(args), **kw)

    def psql(self, sql: str, dbname: str = 'postgres',
             user: Optional[str] = None, check: bool = True) -> str:
        """Run SQL through psql over the unix socket; returns stdout."""
        psql = os.path.join(self.bindir, 'psql')
        if not os.access(psql, os.X_OK):
            # Some distributions ship the client apart from the server.
            psql = shutil.which('psql') or psql
        result = self._run(
            [psql, '-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1',
             '-h', self.rundir, '-p', str(self.port),
             '-U', user or self.superuser, '-d', dbname, '-c', sql],
            check=check, timeout=60)
        return result.stdout

    # -- initialisation ------------------------------------------------------

    def initialise(self) -> bool:
        """Create the cluster (initdb) unless that was already done."""
        self._plan_layout()
        if self.is_initialised():
            return False
        bindir = self.bindir
        parent = os.path.dirname(self.area)
        os.makedirs(parent, exist_ok=True)
        # initdb on a nearly full disk fails in obscure ways; say why first.
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
        # initdb works in a side directory renamed at the end, so that an
        # interrupted run never leaves a data directory that looks usable.
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
            reason = last_error(result.stderr + result.stdout)
            if 'No space left' in reason:
                raise ClusterError('disk full: initdb failed: %s' % reason)
            raise ClusterError('initdb failed: %s' % reason)
        scram = float(server_version(bindir).split('.')[0]) >= 10
        method = 'scram-sha-256' if scram else 'md5'
        with open(os.path.join(tmp, 'postgresql.conf'), 'a') as f:
            f.write(conf.server_settings(self.rundir, scram))
        self._state['auth_method'] = method
        self._write_hba(tmp)
        os.rename(tmp, self.datadir)
        self._state.update(bindir=bindir, roles=False)
        self._save_state()
        marker = os.path.join(self.area, 'initialised')
        with open(marker, 'w') as f:
            f.write(server_version(bindir) + '\n')
        return True

    # -- the server process -------------------------------------------------

    def _postmaster_pid(self) -> Optional[Tuple[int, Optional[int]]]:
        """(pid, port) of a live server for this data directory, or None."""
        try:
            with open(os.path.join(self.datadir, 'postmaster.pid')) as f:
                lines = f.read().splitlines()
            pid = int(lines[0])
        except (OSError, ValueError, IndexError):
            return None
        if not is_postgres(pid):
            return None
        try:
            port = int(lines[3])
        except (ValueError, IndexError):
            port = self.port
        return pid, port

    def is_running(self) -> bool:
        return self._postmaster_pid() is not None

    @property
    def pid(self) -> Optional[int]:
        found = self._postmaster_pid()
        return found[0] if found else None

    def _clear_stale(self) -> None:
        """Remove lock files left by a server that is gone."""
        # PostgreSQL refuses to start while they exist, even when the pid
        # they name now belongs to an unrelated process.
        pidfile = os.path.join(self.datadir, 'postmaster.pid')
        if os.path.exists(pidfile) and self._postmaster_pid() is None:
            os.unlink(pidfile)
        for lock in glob.glob(os.path.join(self.rundir, '.s.PGSQL.*.lock')):
            try:
                with open(lock) as f:
                    pid = int(f.readline().strip())
            except (OSError, ValueError):
                pid = None
            if pid is None or not is_postgres(pid):
                with contextlib.suppress(OSError):
                    os.unlink(lock)
                with contextlib.suppress(OSError):
                    os.unlink(lock[:-len('.lock')])

    def start(self) -> 'Cluster':
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

    def _start(self, keep_port: bool) -> None:
        tried = set()
        port = self.port
        deadline = time.monotonic() + 15
        while True:
            if not keep_port and (port is None or port in tried
                                  or not port_free(port)):
                port = pick_port(avoid=tried)
            self._clear_stale()
            self._write_conf(port)
            # Only this attempt's part of the log explains its failure.
            try:
                offset = os.path.getsize(self.logfile)
            except OSError:
                offset = 0
            result = self.pg_ctl(
                'start', '-w', '-t', str(START_TIMEOUT), '-s',
                '-l', self.logfile, timeout=START_TIMEOUT + 30,
                start_new_session=True, in_netns=True)
            if result.returncode == 0 and self._postmaster_pid():
                self._state['port'] = port
                self._save_state()
                return
            log = ''
            with contextlib.suppress(OSError):
                with open(self.logfile, errors='replace') as f:
                    f.seek(offset)
                    log = f.read()
            reason = last_error(log or result.stderr + result.stdout)
            if 'already in use' in log or 'could not create any TCP' in log:
                # Another program took the port between our check and the
                # server's bind.
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

    def _ensure_roles(self) -> None:
        # Recorded in the state file so that a warm start costs no psql run.
        if self._state.get('roles'):
            return
        self.psql(
            "DO $$ BEGIN "
            "IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{app}') "
            "THEN CREATE ROLE {app} LOGIN CREATEDB SUPERUSER; END IF; "
            "IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{pw}') "
            "THEN CREATE ROLE {pw} LOGIN PASSWORD '{secret}'; END IF; "
            "END $$;".format(app=conf.APP_ROLE, pw=conf.PASSWORD_ROLE,
                             secret=conf.PASSWORD_ROLE_PASSWORD))
        self._state['roles'] = True
        self._save_state()

    def stop(self, mode: str = 'fast') -> bool:
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
                raise ClusterError('pg_ctl stop failed: %s' % last_error(
                    result.stderr + result.stdout))
            return True

    def restart(self, mode: str = 'fast') -> 'Cluster':
        """Stop (with mode) and start again on the same port."""
        self.stop(mode)
        with self._lock():
            self.initialise()
            self._start(keep_port=self.port is not None)
        return self

    def kill(self, sig: int = signal.SIGKILL) -> int:
        """Send sig to the postmaster (a crash, for fault tests)."""
        pid = self.pid
        if pid is None:
            raise ClusterError('the cluster is not running')
        os.kill(pid, sig)
        return pid

    def destroy(self) -> None:
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

    def status(self) -> dict:
        found = self._postmaster_pid() if self.is_initialised() else None
        return dict(
            external=False, running=found is not None,
            initialised=self.is_initialised(), host=self.host,
            port=found[1] if found else self.port,
            pid=found[0] if found else None, superuser=self.superuser,
            datadir=self.datadir, rundir=self.rundir, logfile=self.logfile,
            runas=self.runas)
