"""A real TCP proxy between the tests and PostgreSQL: Twisted's port
forwarder run by twistd, which the tests kill and restart to cut the link.
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from typing import Optional

__all__ = ['free_port', 'twistd_command', 'PortForwarder']


def free_port(host: str = '127.0.0.1') -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _python_path() -> str:
    # bin/test puts the project's eggs on sys.path, not in the environment:
    # hand them to the child so it imports the same Twisted.
    return os.pathsep.join(p for p in sys.path if p)


def twistd_command() -> str:
    """A shell command that runs this Python's twistd."""
    return 'PYTHONPATH=%s %s -c %s' % (
        shlex.quote(_python_path()), shlex.quote(sys.executable),
        shlex.quote('from twisted.scripts.twistd import run; run()'))


class PortForwarder:
    """twistd portforward from ``port`` to ``dest_host:dest_port``, run
    daemonized in ``directory`` with a pid file and a log file."""

    def __init__(self, dest_host: str, dest_port: int,
                 port: Optional[int] = None, directory: str = '.') -> None:
        self.dest_host = dest_host
        self.dest_port = dest_port
        self.port = port or free_port()
        self.directory = directory
        self.pidfile = os.path.join(directory, 'twistd.pid')
        self.logfile = os.path.join(directory, 'twistd.log')

    def _starts_logged(self) -> int:
        try:
            with open(self.logfile) as f:
                return f.read().count('Starting factory')
        except OSError:
            return 0

    def start(self, timeout: float = 10.0) -> None:
        before = self._starts_logged()
        subprocess.check_call(
            '%s --pidfile %s --logfile %s portforward --port '
            'tcp:%d:interface=127.0.0.1 --dest_port %d --host %s' % (
                twistd_command(), shlex.quote(self.pidfile),
                shlex.quote(self.logfile), self.port, self.dest_port,
                shlex.quote(self.dest_host)), shell=True)
        deadline = time.monotonic() + timeout
        while self._starts_logged() <= before:
            if time.monotonic() > deadline:
                raise RuntimeError('Proxy not ready')
            time.sleep(0.01)

    def pid(self) -> Optional[int]:
        try:
            with open(self.pidfile) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        """Kill the proxy; its open connections die with it."""
        pid = self.pid()
        if pid is None:
            return
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + timeout
        while True:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            if time.monotonic() > deadline:
                raise RuntimeError('Proxy would not stop')
            time.sleep(0.01)
        if os.path.exists(self.pidfile):
            os.remove(self.pidfile)

    def freeze(self) -> None:
        """Stop the proxy process: the link hangs without closing."""
        os.kill(self.pid(), signal.SIGSTOP)

    def thaw(self) -> None:
        os.kill(self.pid(), signal.SIGCONT)
