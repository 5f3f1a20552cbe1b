"""Child processes and server processes: environment, liveness, errors."""

import os

from canonical.database.processes import pid_alive

__all__ = ['clean_env', 'pid_alive', 'is_postgres', 'last_error']


def clean_env() -> dict:
    """Our environment without libpq settings that could redirect clients."""
    env = {k: v for k, v in os.environ.items() if not k.startswith('PG')}
    # Messages are matched as text, so they must not be translated.
    env['LC_ALL'] = 'C'
    env['LANG'] = 'C'
    return env


def is_postgres(pid: int) -> bool:
    """True when pid is a live PostgreSQL server process."""
    if not pid_alive(pid):
        return False
    # Pids are reused: a stale pid file may name an unrelated process.
    try:
        with open('/proc/%d/comm' % pid) as f:
            comm = f.read().strip()
    except FileNotFoundError:
        return False
    except OSError:
        return True  # no /proc to ask: trust the pid
    return comm in ('postgres', 'postmaster')


def last_error(text: str) -> str:
    """The most useful line of PostgreSQL or initdb output."""
    lines = [l.strip() for l in text.splitlines() if l.strip()]
    for marker in ('No space left on device', 'FATAL', 'PANIC', 'ERROR',
                   'error', 'could not'):
        for line in reversed(lines):
            if marker in line:
                return line
    return lines[-1] if lines else 'no output'
