"""This process's commits as WAL positions, for read-your-writes.

When a standby policy has been used (``tracking``), the library's COMMIT
carries, in its own message, a statement returning the WAL position the
transaction ended at when it wrote (no extra round trip); a read unit then
waits for a standby to have replayed the highest one (see standbys.py and
readers.py).  Before that, commits only say that they happened
(``untracked``), and the next read unit covers them with the primary's
position.
"""

from __future__ import annotations

import threading
from typing import Optional

from canonical.database.interfaces import IDatabaseConfig
from canonical.database.perdatabase import PerDatabase

__all__ = ['CommitPositions', 'positions_for', 'parse_lsn', 'commit_floor',
           'COMMIT_WITH_POSITION']

_PAGE = 8192
# A WAL page starts with a header (long on a segment's first page): the
# insert position at a page's start points past it, while a standby's replay
# position stops at the end of the last record, the page boundary.
_PAGE_HEADERS = (24, 40)

# COMMIT with the position it ended at, in one message: a transaction that
# wrote (had a transaction id) gets it, one that only read gets NULL.  The
# flag crosses the COMMIT in a session setting.
COMMIT_WITH_POSITION = (
    "SELECT set_config('zopeless.wrote', (pg_current_xact_id_if_assigned() "
    "IS NOT NULL)::text, false); COMMIT; SELECT CASE WHEN "
    "current_setting('zopeless.wrote') = 'true' THEN "
    "pg_current_wal_insert_lsn()::text END")


def parse_lsn(text: Optional[str]) -> int:
    """An LSN ('16/B374D848') as a number; 0 for None."""
    if not text:
        return 0
    high, low = text.split('/')
    return (int(high, 16) << 32) | int(low, 16)


def commit_floor(text: str) -> int:
    """The position a standby must have replayed to show a commit whose
    insert position afterwards was ``text``."""
    position = parse_lsn(text)
    if position % _PAGE in _PAGE_HEADERS:
        position -= position % _PAGE
    return position


class CommitPositions:
    """This process's commits on one database, as WAL positions; shared
    by every thread's writer connection."""

    def __init__(self, config: IDatabaseConfig) -> None:
        self.tracking = False   # a standby policy was used: COMMIT tells
        self.untracked = False  # a commit whose position nobody asked
        self.floor = 0
        self._lock = threading.Lock()

    def note(self, text: Optional[str]) -> None:
        if text is None:
            return  # the transaction wrote nothing
        self.raise_to(commit_floor(text))

    def raise_to(self, position: int) -> None:
        with self._lock:
            if position > self.floor:
                self.floor = position


# The process's commit positions for a configuration's database.
positions_for: PerDatabase[CommitPositions] = PerDatabase(CommitPositions)
