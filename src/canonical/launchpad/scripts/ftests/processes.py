"""Scripts run as real processes, for tests that signal, kill and race them.

``ScriptProcess`` starts ``python -m <module> <args>`` (or ``python <path>
<args>``) with this process's ``sys.path``, reads its stdout and stderr in
threads, and lets a test wait for a line to appear (a marker the script
prints, or a log line), send a signal and time how long the process takes
to exit after it.  ``show()`` prints what a script said, for doctests.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from typing import Dict, List, Optional, Sequence

__all__ = ['ScriptProcess', 'script_environment', 'run_script', 'show']

WORKSCRIPT = 'canonical.launchpad.scripts.ftests.workscript'


def script_environment(**extra: str) -> Dict[str, str]:
    """The environment for a child Python: ours, plus our sys.path (the
    test runner keeps the eggs there, not in the environment)."""
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(p for p in sys.path if p)
    env.update(extra)
    return env


class ScriptProcess:
    """A script run in a child process; see the module docstring."""

    def __init__(self, args: Sequence[str], module: str = WORKSCRIPT,
                 env: Optional[Dict[str, str]] = None,
                 path: Optional[str] = None) -> None:
        program = [path] if path else ['-m', module]
        self.popen = subprocess.Popen(
            [sys.executable] + program + list(args),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=env or script_environment())
        self.pid = self.popen.pid
        self.lines: Dict[str, List[str]] = {'out': [], 'err': []}
        self._cond = threading.Condition(threading.RLock())
        self._open = 2
        self.signalled_at: Optional[float] = None
        self.status: Optional[int] = None
        self.exited_at: Optional[float] = None
        threading.Thread(target=self._reap, daemon=True).start()
        for name, stream in (('out', self.popen.stdout),
                             ('err', self.popen.stderr)):
            threading.Thread(target=self._read, args=(name, stream),
                             daemon=True).start()

    def _read(self, name: str, stream) -> None:
        for line in stream:
            with self._cond:
                self.lines[name].append(line.rstrip('\n'))
                self._cond.notify_all()
        stream.close()
        with self._cond:
            self._open -= 1
            self._cond.notify_all()

    def wait_for(self, pattern: str, stream: str = 'out',
                 timeout: float = 30.0) -> re.Match:
        """The first line of ``stream`` matching regular expression
        ``pattern``, waiting for it to be printed."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout

        def found() -> Optional[re.Match]:
            for line in self.lines[stream]:
                match = regex.search(line)
                if match:
                    return match
            return None
        with self._cond:
            while True:
                match = found()
                if match or not self._open:
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
        if match is None:
            raise AssertionError('%r never appeared on std%s:\n%s'
                                 % (pattern, stream, self.output()))
        return match

    def send(self, signum: int = signal.SIGTERM) -> None:
        self.signalled_at = time.monotonic()
        os.kill(self.pid, signum)

    def _reap(self) -> None:
        # A blocking waitpid(): the exit is seen the moment it happens.
        status = self.popen.wait()
        with self._cond:
            self.status, self.exited_at = status, time.monotonic()
            self._cond.notify_all()

    def wait(self, timeout: float = 60.0) -> int:
        """The exit status (negative: killed by that signal), once the
        process ended and its output was read."""
        with self._cond:
            if not self._cond.wait_for(
                    lambda: self.status is not None and not self._open,
                    timeout):
                raise AssertionError('The script did not end within %s s:'
                                     '\n%s' % (timeout, self.output()))
        return self.status

    def seconds_to_exit(self) -> float:
        """Seconds from send() to the end of the process."""
        self.wait()
        return self.exited_at - self.signalled_at

    def output(self) -> str:
        with self._cond:  # reentrant: called from wait() too
            return '\n'.join(['--- stdout'] + self.lines['out'] +
                             ['--- stderr'] + self.lines['err'])

    def kill(self) -> None:
        """Make sure the process is gone (for tearDown)."""
        if self.status is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.wait()


def run_script(args: Sequence[str], module: str = WORKSCRIPT,
               env: Optional[Dict[str, str]] = None,
               timeout: float = 60.0,
               path: Optional[str] = None) -> ScriptProcess:
    """Run a script to its end; the finished ScriptProcess."""
    process = ScriptProcess(args, module, env, path)
    process.wait(timeout)
    return process


_TIMESTAMP = re.compile(r'^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ')


def show(process: ScriptProcess) -> None:
    """Print a finished script's stdout, its stderr without the
    timestamps, and its exit status."""
    process.wait()
    for line in process.lines['out']:
        print(line)
    for line in process.lines['err']:
        print(_TIMESTAMP.sub('', line))
    print('[exit status %d]' % process.status)
