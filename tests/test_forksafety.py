"""Forked children never touch their parent's database session.

Children made by os.fork(), by a multiprocessing pool with the fork start
method and by a double-forking daemon work at the same time as their
parent, each on a backend of its own, and the parent's session and its
transaction in progress come through the children's work and exit.
"""

import json
import multiprocessing
import subprocess
import sys
import threading
import unittest

import psycopg2

from canonical.database.reconnect import coordinator_for
from canonical.launchpad.database import Person
from canonical.launchpad.scripts.ftests.forkwork import \
    elsewhere_then_reinstall
from canonical.launchpad.scripts.ftests.forkwork import in_child
from canonical.launchpad.scripts.ftests.forkwork import result_of
from canonical.launchpad.scripts.ftests.forkwork import transactions
from canonical.launchpad.scripts.ftests.processes import script_environment
from canonical.lp import initZopeless
from canonical.testing.layers import LaunchpadLayer

CHILDREN = 4
TRANSACTIONS = 30


def condition_lock(coordinator):
    """The lock of a coordinator's condition (private: the per-database
    objects are forgotten after fork because a parent thread may hold it
    when another forks)."""
    return coordinator._cond


class ForkTestCase(unittest.TestCase):

    layer = LaunchpadLayer

    def setUp(self):
        self.ztm = initZopeless(implicitBegin=False)
        self.ztm.begin()
        self.parent_backend = self.backend()
        self.ztm.commit()


    def backend(self):
        return self.ztm.connection().raw.info.backend_pid

    def assertAllWell(self, reports, parent):
        errors = [e for report in reports + [parent]
                  for e in report['errors']]
        self.assertEqual(errors, [])
        self.assertEqual(parent['backends'], [self.parent_backend])
        for report in reports:
            self.assertEqual(len(report['backends']), 1, report)
        backends = {b for report in reports for b in report['backends']}
        self.assertNotIn(self.parent_backend, backends)
        return backends


class TestForkedChildren(ForkTestCase):

    def test_children_and_parent_work_at_the_same_time(self):
        children = [in_child(transactions, TRANSACTIONS)
                    for i in range(CHILDREN)]
        parent = transactions(TRANSACTIONS)
        reports = [result_of(*child) for child in children]
        backends = self.assertAllWell(reports, parent)
        self.assertEqual(len(backends), CHILDREN)
        self.assertEqual([r['silenced'] for r in reports], [1] * CHILDREN)
        self.ztm.begin()
        self.assertEqual(Person.get(2).karma,
                         235 + (CHILDREN + 1) * TRANSACTIONS)
        self.ztm.abort()

    def test_a_multiprocessing_pool_beside_the_parent(self):
        context = multiprocessing.get_context('fork')
        with context.Pool(CHILDREN) as pool:
            pending = pool.map_async(transactions, [10] * 16)
            parent = transactions(TRANSACTIONS)
            reports = pending.get(60)
        backends = self.assertAllWell(reports, parent)
        workers = {report['pid'] for report in reports}
        self.assertEqual(len(backends), len(workers))

    def fork_while_held(self, locks, work, *args):
        """What ``work(*args)`` reported in a child forked while another
        thread of this process held ``locks``."""
        held, release = threading.Event(), threading.Event()

        def hold():
            for lock in locks:
                lock.acquire()
            held.set()
            release.wait()
            for lock in reversed(locks):
                lock.release()
        thread = threading.Thread(target=hold)
        thread.start()
        held.wait()
        try:
            child = in_child(work, *args)
        finally:
            release.set()
            thread.join()
        return result_of(*child, timeout=20)

    def test_a_lock_held_by_a_parent_thread_at_fork_does_not_hang_the_child(
            self):
        coordinator = coordinator_for(self.ztm.config)
        report = self.fork_while_held([condition_lock(coordinator)],
                                      transactions, 1)
        self.assertEqual(report['errors'], [])

    def test_the_managers_locks_held_at_fork_do_not_hang_the_child(self):
        # The manager's own lock (taken by each new thread, uninstall()
        # and set_isolation_level()) and initZopeless()'s.
        import canonical.lp
        report = self.fork_while_held([canonical.lp._installing.lock,
                                       self.ztm._lock],
                                      elsewhere_then_reinstall, 1)
        self.assertEqual(report['errors'], [])
        self.assertEqual(len(report['backends']), 1)

    def test_the_parent_backend_sees_nothing_of_the_child(self):
        self.ztm.begin()
        db = self.ztm.connection()
        db.execute("SELECT 'parent was here'")
        inherited = db.raw

        def meddle():
            try:
                inherited.cursor().execute("SELECT 'child was here'")
            except psycopg2.Error as e:
                outcome = type(e).__name__
            inherited.close()
            return outcome
        self.assertEqual(result_of(*in_child(meddle)), 'OperationalError')
        admin = LaunchpadLayer.harness.connect(autocommit=True).cursor()
        admin.execute('SELECT state, query FROM pg_stat_activity '
                      'WHERE pid = %s', (self.parent_backend,))
        # The first statement carried the transaction's BEGIN.
        self.assertEqual(admin.fetchall(),
                         [('idle in transaction',
                           "BEGIN ISOLATION LEVEL READ COMMITTED; "
                           "SELECT 'parent was here'")])
        self.assertEqual(db.execute('SELECT pg_backend_pid()').fetchone(),
                         (self.parent_backend,))
        self.ztm.commit()


class TestChildrenThatExit(unittest.TestCase):
    """A program forks in the middle of a transaction; its child ends the
    way real children do, through the interpreter's exit."""

    layer = LaunchpadLayer

    def run_program(self, mode):
        output = subprocess.check_output(
            [sys.executable, '-m',
             'canonical.launchpad.scripts.ftests.forkprogram', mode],
            env=script_environment(), timeout=60)
        result = json.loads(output.decode().splitlines()[-1])
        self.assertEqual(result['after'], result['before'])
        self.assertEqual(result['karma'], 777)
        child = result['child']
        self.assertEqual(child['errors'], [])
        self.assertEqual(len(child['backends']), 1)
        self.assertNotEqual(child['backends'][0], result['before'])
        return result

    def test_a_child_exiting_frees_what_it_inherited_harmlessly(self):
        self.assertEqual(self.run_program('exit')['child']['silenced'], 1)

    def test_a_child_closing_the_inherited_connection(self):
        self.run_program('close')

    def test_a_double_forking_daemon(self):
        result = self.run_program('daemon')
        # Silenced by the first child already: the daemon inherited a
        # socket that leads nowhere.
        self.assertEqual(result['child']['silenced'], 0)
