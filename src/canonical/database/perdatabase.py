"""Objects a process keeps once per database, whatever the configuration.

A transaction manager derives configurations (another isolation level,
say) that still talk to the same database; what coordinates connecting,
and what remembers prepared transactions, must be shared by all of them.
"""

from __future__ import annotations

import threading
from typing import Callable, Dict, Generic, List, TypeVar

from canonical.database.interfaces import IDatabaseConfig

__all__ = ['PerDatabase', 'forget_all']

T = TypeVar('T')

_all: List['PerDatabase'] = []


class PerDatabase(Generic[T]):
    """``registry(config)`` is the process's one ``factory(config)`` for
    ``config``'s database (IDatabaseConfig.database_key)."""

    def __init__(self, factory: Callable[[IDatabaseConfig], T]) -> None:
        self._factory = factory
        self._objects: Dict[tuple, T] = {}
        self._lock = threading.Lock()
        _all.append(self)

    def __call__(self, config: IDatabaseConfig) -> T:
        key = config.database_key()
        with self._lock:
            obj = self._objects.get(key)
            if obj is None:
                obj = self._objects[key] = self._factory(config)
            return obj

    def objects(self) -> List[T]:
        """Every object made since the last forget(), oldest first."""
        with self._lock:
            return list(self._objects.values())

    def forget(self) -> None:
        """Drop every object: the next call makes a new one."""
        # A new lock too: after fork() the old one may be held by a thread
        # that does not exist in the child.
        self._lock = threading.Lock()
        self._objects = {}


def forget_all() -> None:
    """Forget the per-database objects of every registry (for a forked
    child, which must not share its parent's, and between tests)."""
    for registry in _all:
        registry.forget()


try:
    from zope.testing.cleanup import addCleanUp
except ImportError:  # the test kit is not installed: nothing to register
    pass
else:
    addCleanUp(forget_all)
