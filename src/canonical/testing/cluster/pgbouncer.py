"""PgBouncer in front of a server of the private cluster.

The operating system's ``pgbouncer`` (Debian's package; ``scripts/setup.sh``
installs it when missing) runs in transaction pooling mode, listening on
loopback, as the cluster's server user (PgBouncer refuses to run as root).
Its files live in a directory of their own, inside the target cluster's
area by default, where that user can reach them.  The admin console is
reached through psql over PgBouncer's unix socket.
"""

import contextlib
import os
import shutil
import signal
import subprocess
import time
from typing import List, Optional, Tuple

from .interfaces import IClusterServer, IPgBouncer, PgBouncerError
from .interfaces import implementer
from .layout import HOST, pick_port
from .process import clean_env, last_error, pid_alive

__all__ = ['PgBouncer', 'find_pgbouncer', 'POOL_SETTINGS']

# Chosen for tests that fail servers over behind PgBouncer; see the README
# for what production wants.
POOL_SETTINGS = {
    'pool_mode': 'transaction',
    'max_client_conn': 500,
    'default_pool_size': 20,
    # After a failed server login PgBouncer waits this long before the
    # next; its default (15 s) is what a restart behind it costs clients.
    'server_login_retry': 1,
    'server_connect_timeout': 3,
    'ignore_startup_parameters': 'extra_float_digits',
}
_START_TIMEOUT = 15
_POLL = 0.02


def find_pgbouncer() -> str:
    found = shutil.which('pgbouncer') or (
        '/usr/sbin/pgbouncer' if os.access('/usr/sbin/pgbouncer', os.X_OK)
        else None)
    if found is None:
        raise PgBouncerError(
            'pgbouncer not found; install it (Debian/Ubuntu: apt-get '
            'install pgbouncer, or run scripts/setup.sh as root)')
    return found


@implementer(IPgBouncer)
class PgBouncer:
    """See IPgBouncer."""

    host = HOST

    def __init__(self, server: IClusterServer,
                 directory: Optional[str] = None,
                 users: Tuple[str, ...] = ('postgres', 'launchpad'),
                 **settings) -> None:
        self.server = server
        self.target = (server.host, server.port)
        self.directory = directory or os.path.join(server.area, 'pgbouncer')
        self.users = users
        self.settings = dict(POOL_SETTINGS, **settings)
        self.port: Optional[int] = None
        self.logfile = os.path.join(self.directory, 'pgbouncer.log')
        self._ini = os.path.join(self.directory, 'pgbouncer.ini')
        self._process: Optional[subprocess.Popen] = None

    def __repr__(self) -> str:
        return '<PgBouncer %s:%s -> %s:%s>' % ((self.host, self.port)
                                               + self.target)

    def dsn(self, dbname: str = 'postgres', user: Optional[str] = None
            ) -> str:
        return 'host=%s port=%s user=%s dbname=%s' % (
            self.host, self.port, user or self.server.superuser, dbname)

    # -- files -------------------------------------------------------------

    def _user_kwargs(self) -> dict:
        return self.server._user_kwargs()

    def _write(self, name: str, text: str) -> None:
        path = os.path.join(self.directory, name)
        with open(path, 'w') as f:
            f.write(text)
        os.chmod(path, 0o600)
        kw = self._user_kwargs()
        if kw:
            os.chown(path, kw['user'], kw['group'])

    def _write_files(self) -> None:
        os.makedirs(self.directory, mode=0o755, exist_ok=True)
        kw = self._user_kwargs()
        if kw:
            os.chown(self.directory, kw['user'], kw['group'])
        self._write('userlist.txt', ''.join(
            '"%s" ""\n' % user for user in self.users))
        lines = ['[databases]',
                 '* = host=%s port=%d' % self.target,
                 '', '[pgbouncer]',
                 'listen_addr = %s' % self.host,
                 'listen_port = %d' % self.port,
                 'unix_socket_dir = %s' % self.directory,
                 'auth_type = trust',
                 'auth_file = %s' % os.path.join(self.directory,
                                                 'userlist.txt'),
                 'admin_users = %s' % self.server.superuser,
                 'logfile = %s' % self.logfile,
                 'pidfile = %s' % os.path.join(self.directory,
                                               'pgbouncer.pid')]
        lines += ['%s = %s' % item for item in sorted(self.settings.items())]
        self._write('pgbouncer.ini', '\n'.join(lines) + '\n')

    # -- the process -------------------------------------------------------

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> 'PgBouncer':
        if self.is_running():
            return self
        binary = find_pgbouncer()
        if self.port is None:
            self.port = pick_port()
        self._write_files()
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(self.directory, 'pgbouncer.pid'))
        self._process = subprocess.Popen(
            [binary, self._ini], stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            env=clean_env(), cwd=self.directory, start_new_session=True,
            **self._user_kwargs())
        deadline = time.monotonic() + _START_TIMEOUT
        while True:
            if self._process.poll() is not None:
                reason = self._process.stderr.read() or self._log_tail()
                self._process = None
                raise PgBouncerError('pgbouncer failed to start: %s'
                                     % last_error(reason))
            if self._answers():
                return self
            if time.monotonic() > deadline:
                self.stop()
                raise PgBouncerError('pgbouncer did not answer within %d s '
                                     '(log: %s)' % (_START_TIMEOUT,
                                                    self.logfile))
            time.sleep(_POLL)

    def _log_tail(self) -> str:
        try:
            with open(self.logfile, errors='replace') as f:
                return f.read()[-2000:]
        except OSError:
            return ''

    def _answers(self) -> bool:
        try:
            self.admin('SHOW VERSION')
        except PgBouncerError:
            return False
        return True

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        # SIGTERM: immediate shutdown, as when the machine goes away.
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        process.stderr.close()

    def restart(self) -> None:
        self.stop()
        self.start()

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    @property
    def pid(self) -> Optional[int]:
        process = self._process
        return process.pid if process and pid_alive(process.pid) else None

    # -- the admin console -------------------------------------------------

    def admin(self, command: str, timeout: float = 30,
              header: bool = False) -> List[List[str]]:
        psql = os.path.join(self.server.bindir, 'psql')
        if not os.access(psql, os.X_OK):
            psql = shutil.which('psql') or psql
        try:
            result = subprocess.run(
                [psql, '-X', '-q', '-A', '-F', '\t', '-P', 'footer=off',
                 '-h', self.directory, '-p', str(self.port), '-U',
                 self.server.superuser, '-d', 'pgbouncer', '-c', command]
                + ([] if header else ['-t']),
                capture_output=True, text=True, env=clean_env(),
                timeout=timeout)
        except subprocess.TimeoutExpired:
            raise PgBouncerError('pgbouncer: %s timed out after %s s'
                                 % (command, timeout))
        if result.returncode != 0:
            raise PgBouncerError('pgbouncer: %s failed: %s' % (
                command, last_error(result.stderr + result.stdout)))
        return [line.split('\t') for line in result.stdout.splitlines()
                if line]

    def pause(self) -> None:
        self.admin('PAUSE')

    def resume(self) -> None:
        self.admin('RESUME')

    def reconnect(self) -> None:
        self.admin('RECONNECT')

    def server_pids(self) -> List[int]:
        """The backend pids of PgBouncer's server connections."""
        rows = self.admin('SHOW SERVERS', header=True)
        column = rows[0].index('remote_pid')
        return [int(row[column]) for row in rows[1:]]

    def kill_server_connections(self, timeout: float = 10) -> int:
        pids = self.server_pids()
        if not pids:
            return 0
        self.server.psql('SELECT pg_terminate_backend(pid) FROM unnest('
                         'ARRAY[%s]) AS pid' % ','.join(map(str, pids)))
        # Until PgBouncer has read the end of those sessions it may still
        # hand them out; the event is over when it has dropped them all.
        deadline = time.monotonic() + timeout
        while set(pids) & set(self.server_pids()):
            if time.monotonic() > deadline:
                raise PgBouncerError('pgbouncer kept its killed server '
                                     'connections %s' % pids)
            time.sleep(_POLL)
        return len(pids)

    def retarget(self, host: str, port: int) -> None:
        self.target = (host, int(port))
        self._write_files()
        if self.is_running():
            self.admin('RELOAD')
