"""Collect log records in tests, to check what the library says."""

from __future__ import annotations

import logging
import threading
from typing import List

__all__ = ['LogCapture']


class LogCapture(logging.Handler):
    """Records of ``name`` and below at ``level`` or higher, kept in order.

    ``str()`` gives one "LEVEL logger message" line per record.
    """

    def __init__(self, name: str = 'canonical',
                 level: int = logging.DEBUG) -> None:
        super().__init__(level)
        self.records: List[logging.LogRecord] = []
        self._lock_records = threading.Lock()
        self.logger = logging.getLogger(name)
        self._old_level = self.logger.level
        self.logger.setLevel(min(level, self.logger.getEffectiveLevel()))
        self.logger.addHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        with self._lock_records:
            self.records.append(record)

    def clear(self) -> None:
        with self._lock_records:
            del self.records[:]

    def uninstall(self) -> None:
        self.logger.removeHandler(self)
        self.logger.setLevel(self._old_level)

    def lines(self, level: int = logging.DEBUG) -> List[str]:
        with self._lock_records:
            return ['%s %s %s' % (r.levelname, r.name, r.getMessage())
                    for r in self.records if r.levelno >= level]

    def __str__(self) -> str:
        return '\n'.join(self.lines(logging.INFO))
