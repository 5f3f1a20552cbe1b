"""A long-running program of the Patroni kit (etcd, HAProxy, Patroni).

Each runs in the foreground under Popen, as the server user when we are
root, optionally inside a network namespace, with its output in a log
file; its pid goes into ``<directory>/<name>.pid`` so that a later run can
stop what a killed run left behind (see ``patroni.remove_leftovers``).
"""

import contextlib
import os
import signal
import subprocess
import time
from typing import Callable, List, Optional

from .interfaces import ClusterError
from .netns import netns_command
from .process import clean_env, pid_alive

__all__ = ['Daemon', 'kill_recorded']

_POLL = 0.05


class Daemon:
    """One program run by the kit; ``start()`` waits for ``ready()``."""

    def __init__(self, name: str, argv: List[str], directory: str,
                 user: Optional[dict] = None, netns: Optional[str] = None,
                 env: Optional[dict] = None) -> None:
        self.name = name
        self.argv = argv
        self.directory = directory
        self.user = user or {}
        self.netns = netns
        self.env = env
        self.logfile = os.path.join(directory, name + '.log')
        self.pidfile = os.path.join(directory, name + '.pid')
        self.process: Optional[subprocess.Popen] = None

    def __repr__(self) -> str:
        return '<Daemon %s pid=%s>' % (self.name, self.pid)

    @property
    def pid(self) -> Optional[int]:
        process = self.process
        return process.pid if process and process.poll() is None else None

    def start(self, ready: Callable[[], bool], timeout: float = 60
              ) -> 'Daemon':
        if self.pid is not None:
            return self
        argv, kw = list(self.argv), dict(self.user)
        if self.netns:
            # Entering a namespace needs root: switch user inside.
            argv = netns_command(self.netns, argv, kw.pop('user', None),
                                 kw.pop('group', None))
            kw.pop('extra_groups', None)
        env = clean_env()
        env.update(self.env or {})
        with open(self.logfile, 'ab') as log:
            self.process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, env=env, cwd=self.directory,
                start_new_session=True, **kw)
        with open(self.pidfile, 'w') as f:
            f.write('%d\n' % self.process.pid)
        deadline = time.monotonic() + timeout
        while not ready():
            if self.process.poll() is not None:
                self.process = None
                raise ClusterError('%s failed to start: %s' % (
                    self.name, self.log_tail()))
            if time.monotonic() > deadline:
                self.stop()
                raise ClusterError('%s did not answer within %s s (log: %s)'
                                   % (self.name, timeout, self.logfile))
            time.sleep(_POLL)
        return self

    def log_tail(self, size: int = 1500) -> str:
        try:
            with open(self.logfile, errors='replace') as f:
                return f.read()[-size:].strip()
        except OSError:
            return ''

    def send(self, sig: int) -> None:
        if self.pid is not None:
            os.kill(self.pid, sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGCONT)
                os.kill(process.pid, sig)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        with contextlib.suppress(OSError):
            os.unlink(self.pidfile)


def kill_recorded(directory: str, names: List[str]) -> None:
    """SIGKILL the processes whose pids ``directory`` records under
    ``names`` (a killed run's), when they still run that program."""
    for name in names:
        with contextlib.suppress(OSError, ValueError):
            with open(os.path.join(directory, name + '.pid')) as f:
                pid = int(f.read().split()[0])
            with open('/proc/%d/cmdline' % pid, 'rb') as f:
                cmdline = f.read().replace(b'\0', b' ')
            if pid_alive(pid) and directory.encode() in cmdline:
                os.kill(pid, signal.SIGKILL)
