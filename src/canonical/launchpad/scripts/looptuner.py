"""LoopTuner: run a big job in chunks that each take about as long as wanted.

A chunk too small wastes time on per-transaction overhead; one too large
holds locks and keeps a transaction open for long.  The tuner measures
each chunk and moves the size halfway (geometrically) towards the size
that would have taken ``goal_seconds`` at the rate just seen, never by more
than eightfold at a time, within the bounds::

    next = sqrt(size * rate * goal_seconds)

A chunk counts as ``chunk_size`` items, whatever ``__call__`` returns
(Launchpad's loops return anything, or nothing), unless the loop declares
ITunableLoopItems and keeps ``items_done``.  A chunk cut off by a
disconnection or a serialization failure committed nothing: it is run
again, with the same size, after its transaction is aborted.  Time a chunk spent waiting for a lost database (DBLoopTuner
knows it) does not count when tuning.
"""

from __future__ import annotations

import logging
import math
import time
from typing import List, Optional

from transaction.interfaces import TransientError
from zope.interface import implementer

from canonical.database.classify import is_retryable_conflict
from canonical.launchpad.scripts.completion import abort_quietly
from canonical.launchpad.scripts.interfaces import ILoopStats
from canonical.launchpad.scripts.interfaces import ILoopTuner
from canonical.launchpad.scripts.interfaces import ITunableLoop
from canonical.launchpad.scripts.interfaces import ITunableLoopItems

__all__ = ['LoopTuner', 'LoopStats', 'is_retryable']

# A chunk size changes at most this many times over from one chunk to the
# next: one odd measurement cannot throw the size far off.
MAX_STEP = 8.0

DEFAULT_MAXIMUM_CHUNK_SIZE = 1000000000


def is_retryable(error: BaseException) -> bool:
    """True when running the chunk again may succeed: the test of
    IZopelessDataManager.should_retry (disconnections and other
    TransientErrors, serialization failures, deadlocks)."""
    return isinstance(error, TransientError) or is_retryable_conflict(error)


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [''])[0]


@implementer(ILoopStats)
class LoopStats:
    """See ILoopStats."""

    def __init__(self) -> None:
        self.chunks = 0
        self.items = 0
        self.chunk_sizes: List[int] = []
        self.retries = 0
        self.downtime = 0.0
        self.cooldowns = 0
        self.cooldown_seconds = 0.0
        self.elapsed = 0.0
        self.aborted = False
        self.done = False

    def __repr__(self) -> str:
        return ('<LoopStats %d items in %d chunks, %d retries, %.2f s>'
                % (self.items, self.chunks, self.retries, self.elapsed))


@implementer(ILoopTuner)
class LoopTuner:
    """See ILoopTuner."""

    progress_interval = 10.0
    max_retries = 10

    def __init__(self, operation: ITunableLoop, goal_seconds: float,
                 minimum_chunk_size: int = 1,
                 maximum_chunk_size: int = DEFAULT_MAXIMUM_CHUNK_SIZE,
                 abort_time: Optional[float] = None,
                 cooldown_time: Optional[float] = None,
                 log: Optional[logging.Logger] = None) -> None:
        if goal_seconds <= 0:
            raise ValueError('goal_seconds must be positive.')
        if not 1 <= minimum_chunk_size <= maximum_chunk_size:
            raise ValueError('Need 1 <= minimum_chunk_size <= '
                             'maximum_chunk_size.')
        self.operation = operation
        self._counts_items = ITunableLoopItems.providedBy(operation)
        self.goal_seconds = float(goal_seconds)
        self.minimum_chunk_size = minimum_chunk_size
        self.maximum_chunk_size = maximum_chunk_size
        self.abort_time = abort_time
        self.cooldown_time = cooldown_time
        self.log = log or logging.getLogger(
            'canonical.launchpad.scripts.looptuner')
        self.chunk_size = float(minimum_chunk_size)
        self.stats = LoopStats()
        self._failures = 0
        self._failed_at = 0.0
        self._started = 0.0
        self._next_progress = 0.0

    # -- the loop ------------------------------------------------------------

    def run(self) -> LoopStats:
        self._started = self._time()
        self._next_progress = self._started + self.progress_interval
        failed = True
        try:
            while not self.operation.isDone():
                if not self._failures:
                    self._coolDown()  # a failed chunk is retried at once
                if self._out_of_time():
                    break
                self._run_chunk()
            else:
                self.stats.done = True
            failed = False
        except BaseException:
            abort_quietly()  # the chunk in progress commits nothing
            raise
        finally:
            self.stats.elapsed = self._time() - self._started
            self._clean_up(failed)
        self._report_end()
        return self.stats

    def _run_chunk(self) -> None:
        size = self._next_size()
        marker = self._outage_marker()
        started = self._time()
        before = self._items_done()
        try:
            self.operation(size)  # what it returns means nothing here
        except Exception as error:
            if not is_retryable(error) or self._failures >= self.max_retries:
                raise
            self._note_failure(size, error)
            return
        seconds = self._time() - started
        waited = self._downtime_since(marker)
        self.stats.downtime += waited
        if self._failures or waited:
            self._report_recovery(waited)
        done = size if before is None else self._items_done() - before
        self._tune(size, done, max(0.0, seconds - waited))
        self._maybe_report_progress()

    def _items_done(self) -> Optional[int]:
        return self.operation.items_done if self._counts_items else None

    def _next_size(self) -> int:
        return int(max(self.minimum_chunk_size,
                       min(self.maximum_chunk_size, round(self.chunk_size))))

    def _tune(self, size: int, done: int, seconds: float) -> None:
        stats = self.stats
        stats.chunks += 1
        stats.items += done
        stats.chunk_sizes.append(size)
        old = self.chunk_size
        if seconds <= 0:
            new = old * MAX_STEP  # too quick to measure
        elif done <= 0:
            new = old  # nothing learnt
        else:
            ideal = done / seconds * self.goal_seconds
            new = max(old / MAX_STEP, min(old * MAX_STEP,
                                          math.sqrt(old * ideal)))
        self.chunk_size = float(max(self.minimum_chunk_size,
                                    min(self.maximum_chunk_size, new)))
        self.log.debug('Chunk %d: %d items in %.3f s (%s items/s); next '
                       'chunk %d.', stats.chunks, done, seconds,
                       '%.1f' % (done / seconds) if seconds > 0 else 'many',
                       self._next_size())

    def _note_failure(self, size: int, error: BaseException) -> None:
        abort_quietly()
        if not self._failures:
            self._failed_at = self._time()
        self._failures += 1
        self.stats.retries += 1
        self.log.warning('Chunk of %d items cut off (%s: %s); nothing of it '
                         'was committed.  Running it again.', size,
                         type(error).__name__, _first_line(error))

    def _report_recovery(self, waited: float) -> None:
        parts = []
        if self._failures:
            parts.append('after %d failed attempt(s), %.2f s after the '
                         'first failure' % (self._failures,
                                            self._time() - self._failed_at))
        if waited:
            parts.append('the database was away for %.2f s' % waited)
        self.log.info('Chunk done again: %s.', '; '.join(parts))
        self._failures = 0

    def _out_of_time(self) -> bool:
        if self.abort_time is None:
            return False
        if self._time() - self._started < self.abort_time:
            return False
        self.stats.aborted = True
        self.log.warning('Task aborted after %.0f seconds (abort_time).',
                         self.abort_time)
        return True

    def _clean_up(self, failed: bool) -> None:
        clean_up = getattr(self.operation, 'cleanUp', None)
        if clean_up is None:
            return
        try:
            clean_up()
        except Exception:
            if not failed:
                raise
            self.log.exception('cleanUp() failed as well.')

    # -- between chunks -------------------------------------------------------

    def _coolDown(self) -> None:
        """Pause before a chunk: cooldown_time after the first, if any;
        none for a cooldown_time of zero or less, as in Launchpad."""
        if self.cooldown_time is not None and self.cooldown_time > 0 and \
                self.stats.chunks:
            self._sleep(self.cooldown_time)

    def _sleep(self, seconds: float) -> None:
        if self.abort_time is not None:
            left = self._started + self.abort_time - self._time()
            seconds = min(seconds, max(0.0, left))
        time.sleep(seconds)

    # -- outages (DBLoopTuner measures them) ----------------------------------

    def _outage_marker(self) -> Optional[int]:
        return None

    def _downtime_since(self, marker: Optional[int]) -> float:
        """Seconds of the last chunk spent waiting for a lost database."""
        return 0.0

    # -- reporting ------------------------------------------------------------

    def _maybe_report_progress(self) -> None:
        now = self._time()
        if now < self._next_progress:
            return
        self._next_progress = now + self.progress_interval
        elapsed = now - self._started
        rate = self.stats.items / elapsed if elapsed > 0 else 0.0
        estimate = getattr(self.operation, 'estimateRemaining', None)
        remaining = estimate() if estimate is not None else None
        left = ''
        if remaining is not None and rate > 0:
            left = ', %d left, about %s' % (
                remaining, _duration(remaining / rate))
        self.log.info('Progress: %d items done in %d chunks, chunk size %d, '
                      '%.1f items/s%s.', self.stats.items, self.stats.chunks,
                      self._next_size(), rate, left)

    def _report_end(self) -> None:
        stats = self.stats
        sizes = stats.chunk_sizes
        self.log.info(
            'Loop %s: %d items in %d chunks (size %s) in %.2f s; %d '
            'retried, %.2f s of downtime, %d cool-downs.',
            'done' if stats.done else 'stopped', stats.items, stats.chunks,
            '%d-%d' % (min(sizes), max(sizes)) if sizes else '-',
            stats.elapsed, stats.retries, stats.downtime, stats.cooldowns)

    @staticmethod
    def _time() -> float:
        return time.monotonic()


def _duration(seconds: float) -> str:
    if seconds < 90:
        return '%.0f s' % seconds
    if seconds < 5400:
        return '%.0f min' % (seconds / 60)
    return '%.1f h' % (seconds / 3600)
