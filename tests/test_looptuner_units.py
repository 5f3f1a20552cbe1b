"""The loop tuners' branches: sizing on a clock the test controls, retries,
failures, stopping, progress, and DBLoopTuner's checks against the real
server."""

import logging
import time
import unittest

import psycopg2
import transaction
from sqlobject import dberrors
from zope.interface import implementer
from zope.interface.verify import verifyObject

from canonical.database.datamanager import ZopelessDataManager
from canonical.database.interfaces import DisconnectionError
from canonical.testing.logcapture import LogCapture
from canonical.launchpad.database import Person
from canonical.launchpad.scripts import DBLoopTuner
from canonical.launchpad.scripts import LoopTuner
from canonical.launchpad.scripts import TunableLoop
from canonical.launchpad.scripts.interfaces import IDBLoopTuner
from canonical.launchpad.scripts.interfaces import ILoopStats
from canonical.launchpad.scripts.interfaces import ILoopTuner
from canonical.launchpad.scripts.interfaces import ITunableLoop
from canonical.launchpad.scripts.interfaces import ITunableLoopCleanUp
from canonical.launchpad.scripts.interfaces import ITunableLoopEstimate
from canonical.launchpad.scripts.interfaces import ITunableLoopItems
from canonical.launchpad.scripts.looptuner import MAX_STEP
from canonical.launchpad.scripts.looptuner import is_retryable
from canonical.lp import SERIALIZABLE_ISOLATION
from canonical.lp import initZopeless
from canonical.testing.layers import LaunchpadLayer

log = logging.getLogger('test_looptuner_units')


class Clock:
    def __init__(self):
        self.now = 1000.0


class ClockedTuner(LoopTuner):
    """A LoopTuner on a clock the operation advances."""

    def __init__(self, clock, *args, **kw):
        self.clock = clock
        super().__init__(*args, **kw)

    def _time(self):
        return self.clock.now

    def _sleep(self, seconds):
        self.clock.now += seconds


@implementer(ITunableLoopItems)
class Job:
    """``items`` items costing ``per_item`` seconds each, plus
    ``overhead`` per chunk, on ``clock``; ``fail`` maps a call number to
    the exception that call raises.  It counts its items."""

    def __init__(self, clock, items, per_item, overhead=0.0, fail=None):
        self.clock, self.items = clock, items
        self.per_item, self.overhead = per_item, overhead
        self.position, self.calls, self.fail = 0, 0, fail or {}
        self.done_items = []
        self.cleaned = 0

    def isDone(self):
        return self.position >= self.items

    def __call__(self, chunk_size):
        self.calls += 1
        count = min(chunk_size, self.items - self.position)
        self.clock.now += self.overhead + count * self.per_item
        if self.calls in self.fail:
            raise self.fail[self.calls]
        self.done_items.extend(range(self.position, self.position + count))
        self.position += count
        return count

    def cleanUp(self):
        self.cleaned += 1

    @property
    def items_done(self):
        return len(self.done_items)


class LaunchpadLoop:
    """A loop as Launchpad writes them: ``__call__`` returns ``result``
    and counts nothing; ``items`` items, ``per_item`` seconds each."""

    def __init__(self, clock, items, per_item, result):
        self.clock, self.items, self.per_item = clock, items, per_item
        self.result, self.position = result, 0

    def isDone(self):
        return self.position >= self.items

    def __call__(self, chunk_size):
        count = min(chunk_size, self.items - self.position)
        self.clock.now += count * self.per_item
        self.position += count
        return self.result


class TestLaunchpadLoops(unittest.TestCase):

    def test_any_return_value_is_ignored(self):
        for result in (None, [1, 2, 3], True, False, 0, 5, 'x', object()):
            clock = Clock()
            loop = LaunchpadLoop(clock, 500, 0.001, result)
            stats = ClockedTuner(clock, loop, 1.0).run()
            self.assertTrue(stats.done, result)
            self.assertEqual(loop.position, 500)
            # Each chunk counts as its size, as Launchpad's total_size.
            self.assertEqual(stats.items, sum(stats.chunk_sizes))
            self.assertGreater(stats.chunk_sizes[-1], 1)  # it tuned

    def test_a_cooldown_of_zero_or_less_is_none(self):
        for cooldown in (-1, -0.5, 0, 0.0, None):
            loop = LaunchpadLoop(Clock(), 5, 0.0, None)
            # The real clock and sleep: a negative sleep would raise.
            stats = LoopTuner(loop, 1.0, cooldown_time=cooldown,
                              maximum_chunk_size=1).run()
            self.assertEqual((stats.done, stats.chunks), (True, 5))
        clock = Clock()
        loop = LaunchpadLoop(clock, 3, 0.0, None)
        ClockedTuner(clock, loop, 1.0, cooldown_time=2.0,
                     maximum_chunk_size=1).run()
        self.assertEqual(clock.now, 1000.0 + 2 * 2.0)  # between chunks

    def test_a_loop_that_counts_its_items_says_so(self):
        clock = Clock()
        job = Job(clock, 100, 0.0)
        stats = ClockedTuner(clock, job, 1.0).run()
        self.assertEqual(stats.chunk_sizes, [1, 8, 64, 512])
        self.assertEqual(stats.items, 100)   # not 585
        self.assertTrue(verifyObject(ITunableLoopItems, job))


class TestSizing(unittest.TestCase):

    def run_job(self, **kw):
        clock = Clock()
        job_kw = {k: kw.pop(k) for k in ('items', 'per_item', 'overhead')
                  if k in kw}
        job = Job(clock, **job_kw)
        tuner = ClockedTuner(clock, job, **kw)
        return tuner.run(), job

    def test_settles_where_a_chunk_takes_the_goal(self):
        stats, job = self.run_job(items=100000, per_item=0.001,
                                  goal_seconds=1.0)
        self.assertEqual(stats.items, 100000)
        self.assertTrue(all(995 <= size <= 1005
                            for size in stats.chunk_sizes[12:-1]),
                        stats.chunk_sizes)
        self.assertEqual(job.done_items, list(range(100000)))

    def test_steps_are_at_most_eightfold_and_within_bounds(self):
        stats, job = self.run_job(items=5000, per_item=0.00001,
                                  goal_seconds=1.0, minimum_chunk_size=3,
                                  maximum_chunk_size=700)
        sizes = stats.chunk_sizes
        self.assertEqual(sizes[:4], [3, 24, 192, 700])
        self.assertTrue(all(3 <= size <= 700 for size in sizes))
        stats, job = self.run_job(items=200, per_item=1.0, goal_seconds=1.0,
                                  minimum_chunk_size=64)
        self.assertEqual(set(stats.chunk_sizes), {64})

    def test_a_slow_chunk_shrinks_the_next(self):
        clock = Clock()
        job = Job(clock, 10000, per_item=0.001)
        tuner = ClockedTuner(clock, job, goal_seconds=1.0)
        tuner.chunk_size = 4000.0
        tuner.run()
        sizes = tuner.stats.chunk_sizes
        self.assertEqual(sizes[0], 4000)
        self.assertGreaterEqual(sizes[1], 4000 / MAX_STEP)
        self.assertLess(sizes[1], 4000)

    def test_an_instant_chunk_grows_the_most(self):
        stats, job = self.run_job(items=100, per_item=0.0, goal_seconds=1)
        self.assertEqual(stats.chunk_sizes[:3], [1, 8, 64])

    def test_contracts(self):
        clock = Clock()
        job = Job(clock, 1, 1.0)
        tuner = ClockedTuner(clock, job, 1.0)
        self.assertTrue(verifyObject(ILoopTuner, tuner))
        self.assertTrue(verifyObject(ILoopStats, tuner.stats))
        self.assertTrue(verifyObject(IDBLoopTuner, DBLoopTuner(job, 1.0)))
        loop = TunableLoop(log)
        for interface in (ITunableLoop, ITunableLoopCleanUp,
                          ITunableLoopEstimate):
            self.assertTrue(verifyObject(interface, loop))
        self.assertRaises(TypeError, loop.run)  # no maximum_chunk_size
        self.assertRaises(ValueError, LoopTuner, job, 0)
        self.assertRaises(ValueError, LoopTuner, job, 1,
                          minimum_chunk_size=10, maximum_chunk_size=5)


class TestFailures(unittest.TestCase):

    def tuner(self, job, clock, **kw):
        return ClockedTuner(clock, job, 1.0, **kw)

    def test_a_transient_failure_runs_the_chunk_again(self):
        clock = Clock()
        lost = DisconnectionError('server closed the connection')
        job = Job(clock, 1000, 0.001, fail={3: lost, 4: lost})
        capture = LogCapture('canonical.launchpad.scripts')
        self.addCleanup(capture.uninstall)
        tuner = self.tuner(job, clock)
        stats = tuner.run()
        self.assertEqual(stats.retries, 2)
        self.assertEqual(job.done_items, list(range(1000)))
        # The chunk cut off came back with the same size.
        self.assertEqual(stats.chunk_sizes[2], 64)
        warnings = [line for line in capture.lines()
                    if line.startswith('WARNING')]
        self.assertEqual(len(warnings), 2)
        self.assertIn('Chunk of 64 items cut off (DisconnectionError: '
                      'server closed the connection)', warnings[0])
        self.assertTrue(any('after 2 failed attempt(s)' in line
                            for line in capture.lines()))

    def test_too_many_failures_in_a_row_are_raised(self):
        clock = Clock()
        lost = DisconnectionError('gone')
        job = Job(clock, 1000, 0.001, fail={n: lost for n in range(2, 100)})
        tuner = self.tuner(job, clock)
        tuner.max_retries = 3
        self.assertRaises(DisconnectionError, tuner.run)
        self.assertEqual(job.calls, 1 + 3 + 1)
        self.assertEqual(job.cleaned, 1)

    def test_other_errors_end_the_loop_and_clean_up(self):
        clock = Clock()
        job = Job(clock, 1000, 0.001, fail={2: KeyError('bug')})
        self.assertRaises(KeyError, self.tuner(job, clock).run)
        self.assertEqual((job.calls, job.cleaned), (2, 1))

    def test_abort_time_and_cooldown_time(self):
        clock = Clock()
        job = Job(clock, 10 ** 9, 0.0, overhead=1.0)
        tuner = self.tuner(job, clock, abort_time=10, cooldown_time=1.0)
        stats = tuner.run()
        self.assertTrue(stats.aborted)
        self.assertFalse(stats.done)
        self.assertEqual(stats.chunks, 5)  # 1 s each, 1 s rest between
        self.assertEqual(job.cleaned, 1)

    def test_progress_comes_at_a_steady_pace(self):
        clock = Clock()
        job = Job(clock, 100 * 1000, 0.001)
        job.estimateRemaining = lambda: job.items - job.position
        capture = LogCapture('canonical.launchpad.scripts')
        self.addCleanup(capture.uninstall)
        stats = self.tuner(job, clock).run()     # about 100 s of work
        progress = [line for line in capture.lines() if 'Progress' in line]
        self.assertIn(len(progress), (9, 10))
        self.assertGreater(stats.chunks, 50)
        self.assertRegex(progress[0], r'Progress: \d+ items done in \d+ '
                         r'chunks, chunk size \d+, [\d.]+ items/s, \d+ left, '
                         r'about \d+ s\.')


class TestRetryable(unittest.TestCase):

    def test_the_same_test_as_the_data_manager(self):
        dm = ZopelessDataManager(None, None, None)
        errors = [DisconnectionError('x'), KeyError('x'),
                  dberrors.OperationalError('x'),
                  psycopg2.OperationalError('x')]
        for error in errors:
            self.assertEqual(is_retryable(error), dm.should_retry(error),
                             error)


class DatabaseTestCase(unittest.TestCase):

    layer = LaunchpadLayer



class TestSerializationFailure(DatabaseTestCase):

    def test_a_real_conflict_runs_the_chunk_again(self):
        ztm = initZopeless(implicitBegin=False,
                           isolation=SERIALIZABLE_ISOLATION)
        other = LaunchpadLayer.harness.connect(autocommit=True)

        class Award:
            calls = done = 0

            def isDone(self):
                return self.done == 3

            def __call__(self, chunk_size):
                self.calls += 1
                ztm.begin()
                person = Person.get(1)
                if self.calls == 2:
                    other.cursor().execute(
                        'UPDATE person SET karma = karma + 1000 WHERE id = 1')
                person.karma = person.karma + 1
                ztm.commit()
                self.done += 1
        job = Award()
        stats = LoopTuner(job, 1.0).run()
        self.assertEqual((stats.retries, job.calls), (1, 4))
        ztm.begin()
        self.assertEqual(Person.get(1).karma, 130 + 1000 + 3)
        ztm.abort()


class TestDatabaseChecks(DatabaseTestCase):

    def tuner(self, **kw):
        return DBLoopTuner(Job(None, 0, 0), 1.0, **kw)

    def test_long_transactions_of_this_database(self):
        initZopeless(implicitBegin=False)
        old = LaunchpadLayer.harness.connect()
        old.cursor().execute('SELECT 1')
        deadline = time.monotonic() + 10
        tuner = self.tuner(long_transaction_seconds=0.2)
        while True:
            found = tuner.longRunningTransactions()
            if found or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        self.assertEqual([row[0] for row in found],
                         [old.info.backend_pid])
        pid, user, db, age, state, query = found[0]
        self.assertEqual((user, db, state, query),
                         ('launchpad', 'launchpad_ftest',
                          'idle in transaction', 'SELECT 1'))
        self.assertGreaterEqual(age, 0.2)
        self.assertIsNone(tuner.replicationLag())  # no standbys here
        # The checks left no transaction behind (explicit begin).
        self.assertRaises(transaction.interfaces.NoTransaction,
                          transaction.manager.get)
        old.rollback()
        self.assertEqual(tuner.longRunningTransactions(), [])

    def test_a_role_that_cannot_see_is_told_once(self):
        from canonical.testing.cluster.conf import PASSWORD_ROLE
        from canonical.testing.cluster.conf import PASSWORD_ROLE_PASSWORD
        initZopeless(implicitBegin=False, dbuser=PASSWORD_ROLE,
                     password=PASSWORD_ROLE_PASSWORD)
        capture = LogCapture('canonical.launchpad.scripts')
        self.addCleanup(capture.uninstall)
        tuner = self.tuner()
        self.assertEqual(tuner._strain(), [])
        self.assertEqual(tuner._strain(), [])
        self.assertEqual(len([line for line in capture.lines()
                              if 'grant it pg_monitor' in line]), 1)


class LaggingTuner(DBLoopTuner):
    """Standbys whose replay lag the test decides, check by check: the
    view of pg_stat_replication that a server without standbys cannot
    give."""

    def __init__(self, lags, *args, **kw):
        self.lags = list(lags)
        super().__init__(*args, **kw)

    def _lag_row(self):
        lag = self.lags.pop(0) if len(self.lags) > 1 else self.lags[0]
        return lag


class TestReplicationLag(DatabaseTestCase):

    def test_the_loop_waits_while_a_standby_lags(self):
        initZopeless(implicitBegin=False)
        clock = Clock()
        job = Job(clock, 3, 0.1)
        capture = LogCapture('canonical.launchpad.scripts')
        self.addCleanup(capture.uninstall)
        tuner = LaggingTuner(
            [(2, 45.0, True), (2, 31.0, True), (2, 2.5, True)], job, 1.0,
            cooldown_poll_seconds=0.01)
        stats = tuner.run()
        self.assertEqual((stats.done, stats.cooldowns), (True, 1))
        waits = [line for line in capture.lines() if 'Cooling' in line]
        self.assertEqual(len(waits), 1)   # one line per wait, not per poll
        self.assertIn('replication lag 45.0 s (threshold 30.0 s)', waits[0])
        self.assertTrue(any('Cooled down for' in line
                            for line in capture.lines()))

    def test_what_the_lag_row_means(self):
        lag = DBLoopTuner._lag
        self.assertIsNone(lag((0, None, True)))     # no standbys
        self.assertIsNone(lag((1, 12.0, False)))    # cannot see it
        self.assertEqual(lag((1, None, True)), 0.0)  # caught up, idle
        self.assertEqual(lag((2, 12.5, True)), 12.5)
