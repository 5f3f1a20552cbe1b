"""Whether a process still runs, for pid files and two-phase gids."""

import os

__all__ = ['pid_alive']


def pid_alive(pid: int) -> bool:
    """True when pid names a process that is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie has released its resources, so it counts as dead.
    try:
        with open('/proc/%d/stat' % pid) as f:
            state = f.read().rsplit(')', 1)[1].split()[0]
        if state == 'Z':
            return False
    except (OSError, IndexError):
        pass
    return True
