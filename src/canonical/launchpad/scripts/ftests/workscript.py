"""A cron script for the tests: it works through the rows of ``work_item``.

Each row is one item; doing it adds 1 to its ``times_done`` and records
the chunk number, so a test sees exactly what committed, and how often.
A run does the items no earlier run has done.
The script prints marker lines on stdout that tests wait for:

``LOCKED pid=N``            the lock is held and the loop is about to start
``BEFORE chunk=K``          before the begin() of chunk K (--pause-before)
``INCHUNK chunk=K``         half of chunk K written, not committed (--pause)
``COMMITTED chunk=K upto=ID``  chunk K committed, items up to ID
``STATS chunks=.. items=.. retries=.. downtime=.. sizes=..``  at the end
``IDLE``                    --idle: waiting for nothing, no transaction

Run it as ``python -m canonical.launchpad.scripts.ftests.workscript``.
"""

from __future__ import annotations

import os
import time
from typing import List, Optional

from zope.interface import implementer

from canonical.launchpad.scripts import LaunchpadCronScript
from canonical.launchpad.scripts import ITunableLoopItems
from canonical.launchpad.scripts import TunableLoop

__all__ = ['WorkLoop', 'WorkScript', 'WORK_TABLE_SQL', 'marker']

WORK_TABLE_SQL = """
    CREATE TABLE work_item (
        id integer PRIMARY KEY,
        times_done integer NOT NULL DEFAULT 0,
        chunk integer
    );
    INSERT INTO work_item (id) SELECT generate_series(1, %d);
"""


def marker(text: str) -> None:
    print(text, flush=True)


@implementer(ITunableLoopItems)
class WorkLoop(TunableLoop):
    """One item per work_item row, in id order; moves on once committed."""

    goal_seconds = 0.2
    maximum_chunk_size = 1000
    tuner_settings = {'cooldown_poll_seconds': 0.05}

    def __init__(self, script: 'WorkScript', ids: List[int]) -> None:
        super().__init__(script.logger)
        self.script = script
        self.ids = ids
        self.position = 0
        self.chunks = 0

    def isDone(self) -> bool:
        return self.position >= len(self.ids)

    def estimateRemaining(self) -> int:
        return len(self.ids) - self.position

    @property
    def items_done(self) -> int:
        return self.position

    def __call__(self, chunk_size: int) -> None:
        options = self.script.options
        number = self.chunks + 1
        batch = self.ids[self.position:self.position + chunk_size]
        if number == options.pause_before:
            marker('BEFORE chunk=%d' % number)
            self.script.wait_for_go()
        txn = self.script.txn
        txn.begin()
        db = txn.connection()
        for index, item in enumerate(batch):
            if number == options.pause and index == len(batch) // 2:
                marker('INCHUNK chunk=%d' % number)
                self.script.wait_for_go()
            db.execute('UPDATE work_item SET times_done = times_done + 1, '
                       'chunk = %s WHERE id = %s', (number, item))
            if options.delay:
                time.sleep(options.delay)
        txn.commit()
        self.position += len(batch)
        self.chunks = number
        marker('COMMITTED chunk=%d upto=%d' % (number, batch[-1]))


class WorkScript(LaunchpadCronScript):
    """Works through work_item with a WorkLoop."""

    supports_dry_run = True
    database_settings = {'resolve_commit_outcome': True}

    def add_my_options(self) -> None:
        add = self.parser.add_option
        add('--delay', type='float', default=0.0,
            help='Seconds each item takes.')
        add('--pause', type='int', default=0, metavar='K',
            help='Stop half-way through chunk K until --go appears.')
        add('--pause-before', type='int', default=0, metavar='K',
            help='Stop before chunk K begins until --go appears.')
        add('--go', default=None, metavar='PATH',
            help='The file that ends a pause (none: pause for ever).')
        add('--idle', action='store_true', default=False,
            help='Hold the lock and wait, with no transaction.')
        add('--goal', type='float', default=None, help='goal_seconds.')

    def wait_for_go(self) -> None:
        path: Optional[str] = self.options.go
        while path is None or not os.path.exists(path):
            time.sleep(0.01)

    def main(self) -> None:
        marker('LOCKED pid=%d' % os.getpid())
        if self.options.idle:
            marker('IDLE')
            self.wait_for_go()
            return
        self.txn.begin()
        ids = [row[0] for row in self.txn.connection().execute(
            'SELECT id FROM work_item WHERE times_done = 0 '
            'ORDER BY id').fetchall()]
        self.txn.abort()
        loop = WorkLoop(self, ids)
        if self.options.goal:
            loop.goal_seconds = self.options.goal
        stats = loop.run()
        marker('STATS chunks=%d items=%d retries=%d downtime=%.3f sizes=%s'
               % (stats.chunks, stats.items, stats.retries, stats.downtime,
                  ','.join(map(str, stats.chunk_sizes))))


if __name__ == '__main__':
    WorkScript('workscript').lock_and_run(implicitBegin=False)
