"""One run of a script at a time: a POSIX record lock on a file named after
the script.

The kernel releases the lock when the process ends, however it ends, so a
crashed run never leaves a stale lock behind (the file stays, harmlessly),
and it tells who holds it (F_GETLK), so a second run can name the holder.
POSIX locks belong to a process: a second lock taken in the same process
would succeed, and closing it would drop the first, so this module also
refuses a lock its own process already holds.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import re
import tempfile
import threading
from typing import Dict, Optional

from zope.interface import implementer

from canonical.launchpad.scripts.interfaces import IScriptLock
from canonical.launchpad.scripts.interfaces import LockHeldError

__all__ = ['ScriptLock', 'default_lock_dir', 'lock_path', 'LOCK_DIR_ENV']

LOCK_DIR_ENV = 'ZOPELESS_LOCK_DIR'

# The system's lock directories, then the user's run directory.
_CANDIDATE_DIRS = ('/run/lock', '/var/lock')

_NAME = re.compile(r'^[A-Za-z0-9][A-Za-z0-9._-]*$')


def default_lock_dir() -> str:
    """$ZOPELESS_LOCK_DIR, else the first writable of /run/lock, /var/lock
    and $XDG_RUNTIME_DIR, else the temporary directory."""
    configured = os.environ.get(LOCK_DIR_ENV)
    if configured:
        return configured
    for directory in _CANDIDATE_DIRS + (os.environ.get('XDG_RUNTIME_DIR'),):
        if directory and os.path.isdir(directory) and \
                os.access(directory, os.W_OK | os.X_OK):
            return directory
    return tempfile.gettempdir()


def lock_path(name: str, directory: Optional[str] = None) -> str:
    """The lock file of script ``name``."""
    if not _NAME.match(name):
        raise ValueError('A script name is letters, digits, ".", "_" and '
                         '"-"; %r cannot name a lock file.' % (name,))
    return os.path.join(directory or default_lock_dir(),
                        'zopeless-%s.lock' % name)


class _Flock(ctypes.Structure):
    # struct flock of Linux, with the 64-bit off_t Python is built with.
    _fields_ = [('l_type', ctypes.c_short), ('l_whence', ctypes.c_short),
                ('l_start', ctypes.c_int64), ('l_len', ctypes.c_int64),
                ('l_pid', ctypes.c_int32)]


def _holder(fd: int) -> Optional[int]:
    """The pid holding a write lock that conflicts with ours, or None."""
    query = _Flock(fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
    answer = _Flock.from_buffer_copy(
        fcntl.fcntl(fd, fcntl.F_GETLK, bytes(query)))
    return None if answer.l_type == fcntl.F_UNLCK else answer.l_pid


# Lock files this process holds: path -> the owning ScriptLock.
_held: Dict[str, 'ScriptLock'] = {}
_held_lock = threading.RLock()


def _held_here(path: str) -> bool:
    with _held_lock:
        lock = _held.get(path)
        return lock is not None and lock.held


@implementer(IScriptLock)
class ScriptLock:
    """See IScriptLock."""

    def __init__(self, name: str, directory: Optional[str] = None) -> None:
        self.name = name
        self.path = lock_path(name, directory)
        self._fd: Optional[int] = None
        self._pid = 0

    @property
    def held(self) -> bool:
        return self._fd is not None and self._pid == os.getpid()

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                           0o644)
        except OSError as e:
            raise OSError(e.errno, 'Cannot open the lock file %s: %s.  Make '
                          'it writable, or choose another directory with '
                          '$%s.' % (self.path, e.strerror, LOCK_DIR_ENV)) \
                from None

    def acquire(self) -> None:
        with _held_lock:
            if _held_here(self.path):
                raise LockHeldError(self.path, os.getpid())
            for attempt in range(3):
                fd = self._open()
                try:
                    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError as e:
                    if e.errno not in (errno.EACCES, errno.EAGAIN):
                        os.close(fd)
                        raise
                    holder = _holder(fd)
                    os.close(fd)  # we hold nothing on it: nothing released
                    if holder is not None or attempt == 2:
                        raise LockHeldError(self.path, holder) from None
                    continue  # released meanwhile: try again
                break
            # For people reading the file; the kernel's answer is the truth.
            os.ftruncate(fd, 0)
            os.write(fd, b'%d\n' % os.getpid())
            self._fd, self._pid = fd, os.getpid()
            _held[self.path] = self

    def release(self) -> None:
        with _held_lock:
            fd, self._fd = self._fd, None
            if fd is None:
                return
            if _held.get(self.path) is self:
                del _held[self.path]
            # Closing drops the lock (in a forked child it holds none).
            os.close(fd)

    def holder_pid(self) -> Optional[int]:
        if _held_here(self.path):
            # Ours: opening and closing the file would drop the lock.
            return os.getpid()
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            return _holder(fd)
        finally:
            os.close(fd)

    def __repr__(self) -> str:
        return '<ScriptLock %s%s>' % (self.path,
                                      ' held' if self.held else '')
