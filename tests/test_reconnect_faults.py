"""Real faults against a real server, each with the outcome it must have.

These tests stop, restart and terminate a PostgreSQL server, so they run
on a private cluster of their own (var/fault-cluster), never the shared
test cluster.  The faults of the test proxy, on the same cluster, are in
test_reconnect_proxied.py.
"""

import os
import shutil
import tempfile
import threading
import time
import unittest

import psycopg2
import transaction
import transaction.interfaces
from sqlobject import dberrors
from transaction.interfaces import TransientError
from zope.testing.cleanup import cleanUp

from canonical.testing.cluster import Cluster
from canonical.testing.waiting import wait_for
from canonical.testing.logcapture import LogCapture
from canonical.database.interfaces import ConnectionFailedError
from canonical.database.interfaces import DatabaseUnavailableError
from canonical.database.interfaces import DisconnectionError
from canonical.database.reconnect import coordinator_for
from canonical.launchpad.database import Person
from canonical.launchpad.ftests.harness import LaunchpadTestSetup
from canonical.lp import initZopeless


HERE = os.path.dirname(os.path.abspath(__file__))


class FaultClusterLayer:
    """A private cluster the tests may stop and restart at will."""

    cluster = None
    setup = None

    @classmethod
    def setUp(cls):
        cls.cluster = Cluster(os.path.join(HERE, os.pardir, 'var',
                                           'fault-cluster'))
        cls.cluster.start()
        cls.setup = LaunchpadTestSetup()
        cls.setup.server = cls.cluster

    @classmethod
    def tearDown(cls):
        cls.cluster.stop('fast')

    @classmethod
    def testSetUp(cls):
        if not cls.cluster.is_running():
            cls.cluster.start()
        cls.setup.setUp()

    @classmethod
    def testTearDown(cls):
        cleanUp()
        if not cls.cluster.is_running():
            cls.cluster.start()
        cls.setup.tearDown()


class FaultTestCase(unittest.TestCase):

    layer = FaultClusterLayer
    options = {}

    def setUp(self):
        self.cluster = FaultClusterLayer.cluster
        self.ztm = self.install()
        self.log = LogCapture('canonical.database')

    def install(self, port=None, **options):
        settings = dict(dbname='launchpad_ftest', dbuser='launchpad')
        settings.update(self.options)
        settings.update(options)
        return initZopeless(
            dbhost='127.0.0.1 port=%d' % (port or self.cluster.port),
            implicitBegin=False, **settings)

    def tearDown(self):
        self.log.uninstall()

    def admin(self):
        conn = psycopg2.connect(self.cluster.dsn('launchpad_ftest'))
        conn.autocommit = True
        self.addCleanup(conn.close)
        return conn.cursor()

    def terminate(self, pid):
        cursor = self.admin()
        cursor.execute('SELECT pg_terminate_backend(%s)', (pid,))
        self.wait_backend_gone(pid, cursor)

    def wait_backend_gone(self, pid, cursor=None):
        cursor = cursor or self.admin()

        def gone():
            cursor.execute('SELECT 1 FROM pg_stat_activity WHERE pid = %s',
                           (pid,))
            return cursor.fetchone() is None
        wait_for(gone, 5, 'backend %d to go' % pid)

    def tempdir(self):
        path = tempfile.mkdtemp(prefix='zopeless-faults-')
        self.addCleanup(shutil.rmtree, path, ignore_errors=True)
        return path

    def backend_pid(self):
        return self.ztm.connection().backend_pid  # no round trip

    def begin_in_thread(self, results):
        def run():
            try:
                self.ztm.begin()
                results.append((Person.get(1).name, self.backend_pid(),
                                time.monotonic()))
                self.ztm.commit()
            except Exception as e:  # reported to the test
                results.append(e)
        thread = threading.Thread(target=run)
        thread.start()
        return thread

    def warnings(self):
        return [line for line in self.log.lines() if line.startswith('WARN')]


class TestBackendTerminated(FaultTestCase):

    def test_while_idle_begin_reconnects(self):
        self.ztm.begin()
        old = self.backend_pid()
        self.ztm.commit()
        self.terminate(old)
        self.ztm.begin()
        self.assertEqual(Person.get(1).name, 'sabdfl')
        self.assertNotEqual(self.backend_pid(), old)
        self.ztm.commit()
        self.assertEqual(len(self.warnings()), 1, self.warnings())
        self.assertIn('terminated', self.warnings()[0])

    def test_in_transaction_fails_loudly_then_recovers(self):
        self.ztm.begin()
        Person.get(1)
        self.terminate(self.backend_pid())
        with self.assertRaises(DisconnectionError) as caught:
            Person.get(2)
        error = caught.exception
        self.assertIsInstance(error, TransientError)
        self.assertIsInstance(error, dberrors.OperationalError)
        self.assertIn('terminat', str(error))
        self.assertRaises(DisconnectionError, self.ztm.commit)
        self.ztm.abort()
        self.ztm.begin()
        self.assertEqual(Person.get(2).name, 'lifeless')
        self.ztm.commit()

    def test_commit_after_loss_is_a_definite_failure(self):
        self.ztm.begin()
        Person.get(1).karma = 99
        self.terminate(self.backend_pid())
        self.assertRaises(DisconnectionError, self.ztm.commit)
        self.ztm.abort()
        self.ztm.begin()
        self.assertEqual(Person.get(1).karma, 130)
        self.ztm.abort()

    def test_attempts_rerun_the_whole_unit(self):
        self.ztm.begin()
        victim = self.backend_pid()
        self.ztm.abort()
        runs = []
        for attempt in transaction.manager.attempts(3):
            with attempt:
                runs.append(self.backend_pid())
                person = Person.get(3)
                if len(runs) == 1:
                    self.terminate(victim)
                person.karma = person.karma + 1
        self.assertEqual(len(runs), 2)
        self.ztm.begin()
        self.assertEqual(Person.get(3).karma, 13)
        self.ztm.abort()


class TestTimeouts(FaultTestCase):

    def test_statement_timeout_keeps_the_connection(self):
        self.ztm.begin()
        pid = self.backend_pid()
        self.ztm.connection().execute("SET LOCAL statement_timeout = '50ms'")
        with self.assertRaises(dberrors.OperationalError) as caught:
            self.ztm.connection().execute('SELECT pg_sleep(1)')
        self.assertNotIsInstance(caught.exception, DisconnectionError)
        self.assertIn('statement timeout', str(caught.exception))
        self.ztm.abort()
        self.ztm.begin()
        self.assertEqual(self.backend_pid(), pid)
        self.ztm.abort()
        self.assertEqual(self.warnings(), [])

    def test_idle_in_transaction_timeout_is_a_disconnection(self):
        self.ztm.begin()
        pid = self.backend_pid()
        self.ztm.connection().execute(
            "SET LOCAL idle_in_transaction_session_timeout = '100ms'")
        self.wait_backend_gone(pid)  # the server ended the idle session
        self.assertRaises(DisconnectionError, Person.get, 1)
        self.ztm.abort()
        self.ztm.begin()
        self.assertEqual(Person.get(1).name, 'sabdfl')
        self.ztm.abort()


class TestServerRestart(FaultTestCase):

    def test_restart_while_idle(self):
        self.ztm.begin()
        old = self.backend_pid()
        self.ztm.commit()
        self.cluster.restart('fast')
        self.ztm.begin()
        self.assertEqual(Person.get(1).name, 'sabdfl')
        self.assertNotEqual(self.backend_pid(), old)
        self.ztm.commit()

    def test_begin_waits_through_an_outage_longer_than_the_cap(self):
        coordinator = coordinator_for(self.ztm.config)
        self.ztm.begin()
        self.ztm.commit()
        self.cluster.stop('fast')
        results = []
        before = coordinator.outage_attempts
        started = time.monotonic()
        thread = self.begin_in_thread(results)
        # Thirty attempts: about a second, twenty times the 50 ms cap.
        wait_for(lambda: coordinator.outage_attempts - before >= 30, 10,
                 'thirty reconnect attempts')
        elapsed = time.monotonic() - started
        self.assertTrue(thread.is_alive())
        self.assertEqual(results, [])
        attempts = coordinator.outage_attempts - before
        # Equal jitter under a 50 ms cap: at most one attempt per 25 ms.
        self.assertLessEqual(attempts, elapsed / 0.025 + 5)
        self.assertGreater(attempts, 5)
        self.cluster.start()
        thread.join(10)
        self.assertFalse(thread.is_alive())
        self.assertEqual(results[0][0], 'sabdfl')
        self.assertEqual(len(self.warnings()), 1, self.warnings())
        self.assertIn('Reconnected', self.log.lines()[-1])

    def test_a_thread_that_waited_out_an_outage_leaves_no_session(self):
        # Its failed attempts must not keep it (its frames, and with them
        # its connection) alive after the thread ended: behind PgBouncer
        # such a session stays open for ever.
        self.cluster.stop('fast')
        results = []
        thread = self.begin_in_thread(results)
        wait_for(lambda: coordinator_for(self.ztm.config).outage_attempts,
                 10, 'a failed attempt')
        self.cluster.start()
        thread.join(10)
        self.assertEqual(results[0][0], 'sabdfl')
        del thread
        self.wait_backend_gone(results[0][1])

    def test_twenty_waiting_threads_make_one_probe(self):
        coordinator = coordinator_for(self.ztm.config)
        self.cluster.stop('fast')
        # No recent success vouches for the server: this coordinator (the
        # clean-up forgot the earlier ones) has never connected.
        self.assertEqual(coordinator.attempts, 0)
        results = []
        started = time.monotonic()
        threads = [self.begin_in_thread(results) for i in range(20)]
        wait_for(lambda: coordinator.outage_attempts >= 30, 10,
                 "thirty of the prober's attempts")
        during = coordinator.attempts
        # One probe for the process: the same bound as for one thread; the
        # threads arriving together wait for the first attempt's verdict.
        self.assertLessEqual(during,
                             (time.monotonic() - started) / 0.025 + 5)
        self.cluster.start()
        for thread in threads:
            thread.join(10)
        self.assertEqual(len(results), 20, results)
        self.assertEqual(set(r[0] for r in results), {'sabdfl'})
        self.assertEqual(len(set(r[1] for r in results)), 20)

    def test_failed_begin_in_attempts_leaves_no_transaction(self):
        self.ztm.uninstall()
        self.ztm = self.install(reconnect_timeout=0.3)
        self.ztm.begin()
        self.ztm.abort()
        self.cluster.stop('fast')
        for i in range(2):
            with self.assertRaises(DatabaseUnavailableError):
                for attempt in transaction.manager.attempts(2):
                    with attempt:
                        Person.get(1)
            self.assertRaises(transaction.interfaces.NoTransaction,
                              transaction.manager.get)
        self.cluster.start()
        for attempt in transaction.manager.attempts(2):
            with attempt:
                self.assertEqual(Person.get(1).name, 'sabdfl')

    def test_reconnect_timeout_raises_and_leaves_no_transaction(self):
        self.ztm.uninstall()
        self.ztm = self.install(reconnect_timeout=0.3)
        self.cluster.stop('fast')
        started = time.monotonic()
        self.assertRaises(DatabaseUnavailableError, self.ztm.begin)
        self.assertLess(time.monotonic() - started, 2)
        self.assertRaises(DatabaseUnavailableError, self.ztm.begin)
        self.cluster.start()
        self.ztm.begin()
        self.assertEqual(Person.get(1).name, 'sabdfl')
        self.ztm.abort()


class TestTooManyConnections(FaultTestCase):

    def test_a_full_server_is_waited_out(self):
        # Superusers ignore connection limits: use the ordinary role.
        cursor = self.admin()
        cursor.execute('GRANT SELECT ON person TO zopeless_pw')
        cursor.execute('ALTER ROLE zopeless_pw CONNECTION LIMIT 1')
        self.addCleanup(cursor.execute,
                        'ALTER ROLE zopeless_pw CONNECTION LIMIT -1')
        self.ztm.uninstall()
        self.ztm = self.install(dbuser='zopeless_pw',
                                password='canary-secret-9')
        holder = psycopg2.connect(self.cluster.dsn('launchpad_ftest',
                                                   'zopeless_pw'),
                                  password='canary-secret-9')
        results = []
        coordinator = coordinator_for(self.ztm.config)
        thread = self.begin_in_thread(results)
        # The thread that warned goes on probing: after its first probe
        # the warning is there.
        wait_for(lambda: coordinator.outage_attempts, 10, 'a probe')
        self.assertTrue(thread.is_alive())
        self.assertIn('too many connections', self.warnings()[0])
        holder.close()
        thread.join(10)
        self.assertEqual(results[0][0], 'sabdfl')


class TestPermanentErrors(FaultTestCase):

    def check_fast_failure(self, **options):
        self.ztm.uninstall()
        self.ztm = initZopeless(
            implicitBegin=False,
            dbhost='127.0.0.1 port=%d' % self.cluster.port, **options)
        started = time.monotonic()
        with self.assertRaises(ConnectionFailedError) as caught:
            self.ztm.begin()
        self.assertLess(time.monotonic() - started, 1.0)
        self.assertIsInstance(caught.exception, dberrors.OperationalError)
        return str(caught.exception)

    def test_unknown_user(self):
        message = self.check_fast_failure(dbname='launchpad_ftest',
                                          dbuser='nonexistent')
        self.assertIn('role "nonexistent" does not exist', message)

    def test_unknown_database(self):
        message = self.check_fast_failure(dbname='no_such_db',
                                          dbuser='launchpad')
        self.assertIn('database "no_such_db" does not exist', message)

    def test_wrong_password_is_never_shown(self):
        message = self.check_fast_failure(
            dbname='launchpad_ftest', dbuser='zopeless_pw',
            password='wrong-canary-77')
        self.assertIn('password authentication failed', message)
        self.assertNotIn('wrong-canary-77', message)
        self.assertNotIn('wrong-canary-77', repr(self.ztm.config))
        self.assertNotIn('wrong-canary-77', '\n'.join(self.log.lines()))

    def test_every_begin_fails_fast_not_only_the_first(self):
        self.check_fast_failure(dbname='launchpad_ftest',
                                dbuser='nonexistent')
        started = time.monotonic()
        self.assertRaises(ConnectionFailedError, self.ztm.begin)
        self.assertLess(time.monotonic() - started, 1.0)
