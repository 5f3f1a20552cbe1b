"""Cron scripts as real processes: racing, killed, signalled, and cut off
from their database.

The script is canonical.launchpad.scripts.ftests.workscript, which works
through the rows of ``work_item`` with a TunableLoop and prints markers the
tests wait for.  Outages are made by killing the twistd port forwarder it
reaches the database through, never by stopping the shared cluster.
"""

import os
import re
import shutil
import signal
import tempfile
import time
import unittest

from canonical.testing.proxy import PortForwarder
from canonical.launchpad.scripts.ftests.processes import ScriptProcess
from canonical.launchpad.scripts.ftests.processes import script_environment
from canonical.launchpad.scripts.ftests.workscript import WORK_TABLE_SQL
from canonical.launchpad.scripts.interfaces import INTERRUPTED_STATUS_BASE
from canonical.launchpad.scripts.lock import ScriptLock
from canonical.testing.layers import DatabaseLayer
from canonical.testing.layers import LaunchpadLayer

TERMINATED = INTERRUPTED_STATUS_BASE + signal.SIGTERM   # 143
INTERRUPTED = INTERRUPTED_STATUS_BASE + signal.SIGINT   # 130

# A stopped script is gone this soon after the signal, however loaded the
# machine; typically within 0.1 s.
PROMPTLY = 5.0


class ScriptTestCase(unittest.TestCase):

    layer = LaunchpadLayer
    items = 600

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix='zopeless-scripts-')
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.env = script_environment(
            ZOPELESS_LOCK_DIR=self.tmp,
            ZOPELESS_CRON_CONTROL=os.path.join(self.tmp, 'cron.ini'))
        self.go = os.path.join(self.tmp, 'go')
        self.conn = LaunchpadLayer.harness.connect(autocommit=True)
        self.conn.cursor().execute(WORK_TABLE_SQL % self.items)

    def start(self, *args):
        process = ScriptProcess(list(args), env=self.env)
        self.addCleanup(process.kill)
        return process

    def query(self, sql, *args):
        cursor = self.conn.cursor()
        cursor.execute(sql, args)
        return cursor.fetchall()

    def times_done(self):
        """{times_done: how many items}."""
        return dict(self.query(
            'SELECT times_done, count(*) FROM work_item GROUP BY 1'))

    def committed_upto(self, process, chunk):
        return int(process.wait_for(r'COMMITTED chunk=%d upto=(\d+)'
                                    % chunk).group(1))

    def wait_until(self, condition, timeout=10.0):
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                self.fail('gave up waiting for %s' % condition)
            time.sleep(0.01)

    def assertNoBackendLeft(self):
        self.wait_until(lambda: not self.query(
            "SELECT pid FROM pg_stat_activity WHERE application_name = "
            "'zopeless' AND datname = current_database()"))

    def assertEverythingDoneOnce(self, process):
        self.assertEqual(process.wait(), 0, process.output())
        self.assertEqual(self.times_done(), {1: self.items})

    def stats(self, process):
        line = process.wait_for(r'^STATS ').string
        return dict(item.split('=') for item in line.split()[1:])


class TestOneRunAtATime(ScriptTestCase):

    def test_a_second_run_exits_1_and_the_first_is_unharmed(self):
        first = self.start('--pause', '2', '--go', self.go)
        first.wait_for('INCHUNK chunk=2')
        lock = ScriptLock('workscript', self.tmp)
        self.assertEqual(lock.holder_pid(), first.pid)
        second = self.start()
        self.assertEqual(second.wait(), 1, second.output())
        message = second.wait_for('already running', 'err').string
        self.assertIn('process %d holds the lock %s'
                      % (first.pid, lock.path), message)
        self.assertEqual(second.lines['out'], [])   # it never started
        open(self.go, 'w').close()
        self.assertEverythingDoneOnce(first)
        self.assertIsNone(lock.holder_pid())

    def test_a_killed_run_leaves_no_stale_lock(self):
        killed = self.start('--pause', '3')
        killed.wait_for('INCHUNK chunk=3')
        killed.send(signal.SIGKILL)
        self.assertEqual(killed.wait(), -signal.SIGKILL)
        lock = ScriptLock('workscript', self.tmp)
        self.assertTrue(os.path.exists(lock.path))  # the file, not the lock
        self.assertIsNone(lock.holder_pid())
        # Its two committed chunks stay done, its third was rolled back by
        # the server; the next run does the rest.
        self.assertEqual(self.query(
            'SELECT max(chunk) FROM work_item'), [(2,)])
        self.assertEverythingDoneOnce(self.start())


class TestSignals(ScriptTestCase):

    def test_sigterm_in_the_middle_of_a_chunk(self):
        process = self.start('--delay', '0.002', '--pause', '4')
        upto = self.committed_upto(process, 3)
        process.wait_for('INCHUNK chunk=4')
        process.send(signal.SIGTERM)
        self.assertLess(process.seconds_to_exit(), PROMPTLY)
        self.assertEqual(process.status, TERMINATED, process.output())
        process.wait_for('Stopped by SIGTERM', 'err')
        # The chunks before were committed; the one cut off, not at all.
        self.assertEqual(self.query(
            'SELECT max(id), count(*) FROM work_item WHERE times_done = 1'),
            [(upto, upto)])
        self.assertEqual(self.query(
            'SELECT count(*) FROM work_item WHERE chunk = 4'), [(0,)])
        self.assertEqual(self.times_done(), {1: upto, 0: self.items - upto})
        self.assertIsNone(ScriptLock('workscript', self.tmp).holder_pid())
        self.assertNoBackendLeft()

    def test_sigterm_and_sigint_while_idle(self):
        for signum, status in ((signal.SIGTERM, TERMINATED),
                               (signal.SIGINT, INTERRUPTED)):
            process = self.start('--idle')
            process.wait_for('IDLE')
            process.send(signum)
            self.assertLess(process.seconds_to_exit(), PROMPTLY)
            self.assertEqual(process.status, status, process.output())
        self.assertNoBackendLeft()


class ForwardedTestCase(ScriptTestCase):
    """The script reaches the database through a twistd port forwarder."""

    def setUp(self):
        ScriptTestCase.setUp(self)
        server = DatabaseLayer.server
        self.proxy = PortForwarder(server.host, server.port,
                                   directory=self.tmp)
        self.proxy.start()
        self.addCleanup(self.proxy.stop)

    def start(self, *args):
        return ScriptTestCase.start(
            self, '--dbhost', '127.0.0.1 port=%d' % self.proxy.port, *args)


class TestLostDatabase(ForwardedTestCase):

    def test_sigterm_while_begin_waits_for_a_stopped_database(self):
        process = self.start('-vv', '--pause-before', '3', '--go', self.go)
        upto = self.committed_upto(process, 2)
        process.wait_for('BEFORE chunk=3')
        self.proxy.stop(signal.SIGKILL)
        open(self.go, 'w').close()
        # Well into the wait: the prober's third attempt has failed.
        process.wait_for(r'Reconnect attempt 3 .* failed', 'err')
        process.send(signal.SIGTERM)
        self.assertLess(process.seconds_to_exit(), PROMPTLY)
        self.assertEqual(process.status, TERMINATED, process.output())
        self.assertEqual(self.times_done(), {1: upto, 0: self.items - upto})
        self.assertIsNone(ScriptLock('workscript', self.tmp).holder_pid())
        self.assertNoBackendLeft()

    def test_a_loop_across_a_restart_does_every_item_exactly_once(self):
        process = self.start('--delay', '0.002')
        self.committed_upto(process, 4)
        self.proxy.stop(signal.SIGKILL)
        # The script has noticed: a chunk cut off, or a dead connection
        # found at begin(); either way it is waiting now.
        process.wait_for('Lost the connection', 'err')
        self.proxy.start()
        self.assertEverythingDoneOnce(process)
        stats = self.stats(process)
        self.assertEqual(int(stats['items']), self.items)
        self.assertGreater(float(stats['downtime']), 0)
        chunks = [int(m) for m in re.findall(
            r'COMMITTED chunk=(\d+)', '\n'.join(process.lines['out']))]
        self.assertEqual(chunks, list(range(1, len(chunks) + 1)))
        self.assertEqual(self.query(
            'SELECT count(DISTINCT chunk) FROM work_item'), [(len(chunks),)])
