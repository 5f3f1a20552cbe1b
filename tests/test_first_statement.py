"""The first statement of a transaction carries its BEGIN: when it finds the
link dead, nothing of the transaction can have run, so it is sent again on
a new connection.  Nothing else ever is.

Real faults, on the fault tests' private cluster: terminated backends, a
stopped server, links cut by a proxy before and after the statement
reached the server.
"""

import threading
import time

import transaction
from sqlobject import dberrors

from canonical.database.interfaces import DisconnectionError
from canonical.database.reconnect import coordinator_for
from canonical.launchpad.database import Person
from canonical.lp import initZopeless
from test_reconnect_faults import FaultTestCase
from test_reconnect_proxied import ProxiedTestCase


class ReplayMixin:

    def db(self):
        """This thread's connection, in a transaction or not."""
        if getattr(self, '_db', None) is None or \
                self._db_of is not self.ztm:
            self.ztm.begin()
            self._db, self._db_of = self.ztm.connection(), self.ztm
            self.ztm.abort()
        return self._db

    def begin_then_terminate(self):
        """begin() on a healthy connection, whose backend then dies before
        the first statement: begin() itself cannot know."""
        self.ztm.begin()
        self.terminate(self.db().backend_pid)

    def count(self, name):
        cursor = self.admin()
        cursor.execute('SELECT count(*) FROM person WHERE name = %s',
                       (name,))
        return cursor.fetchone()[0]


class TestFirstStatementReplayed(ReplayMixin, FaultTestCase):

    def setUp(self):
        FaultTestCase.setUp(self)
        # A live connection to start from: the faults come after begin().
        self.old = self.db().backend_pid

    def test_orm_statement(self):
        self.begin_then_terminate()
        self.assertEqual(Person.get(1).name, 'sabdfl')
        self.assertNotEqual(self.db().backend_pid, self.old)
        self.assertEqual(self.db().replays, 1)
        Person.get(1).karma = 31  # the same transaction goes on
        self.ztm.commit()
        self.assertEqual(len(self.warnings()), 1, self.warnings())
        self.ztm.begin()
        self.assertEqual(Person.get(1).karma, 31)
        self.ztm.abort()

    def test_sql_statement(self):
        self.begin_then_terminate()
        self.db().execute("INSERT INTO person (name, displayname) "
                          "VALUES ('replayed', 'R')")
        self.ztm.commit()
        self.assertEqual(self.db().replays, 1)
        self.assertEqual(self.count('replayed'), 1)

    def test_reading_raw_is_a_first_statement_too(self):
        self.begin_then_terminate()
        raw = self.db().raw  # sends the BEGIN alone: replayed
        self.assertNotEqual(raw.info.backend_pid, self.old)
        raw.cursor().execute('SELECT 1')
        self.ztm.commit()
        self.assertEqual(self.db().replays, 1)

    def test_waits_through_an_outage_like_begin(self):
        coordinator = coordinator_for(self.ztm.config)
        begun, go = threading.Event(), threading.Event()
        results = []

        def transaction_of_its_own():
            try:
                self.ztm.begin()  # healthy: the server is still up
                begun.set()
                go.wait(10)
                results.append(Person.get(1).name)
                self.ztm.commit()
            except Exception as e:  # reported to the test
                results.append(e)
                begun.set()
        thread = threading.Thread(target=transaction_of_its_own)
        thread.start()
        begun.wait(10)
        self.cluster.stop('fast')
        before = coordinator.outage_attempts
        go.set()
        time.sleep(1.0)
        self.assertTrue(thread.is_alive())
        self.assertEqual(results, [])
        # One probe for the process, at the backoff's pace.
        attempts = coordinator.outage_attempts - before
        self.assertGreater(attempts, 5)
        self.assertLessEqual(attempts, 1.0 / 0.025 + 5)
        self.cluster.start()
        thread.join(10)
        self.assertEqual(results, ['sabdfl'])

    def test_second_statement_is_never_replayed(self):
        self.ztm.begin()
        Person.get(1).karma = 77
        self.terminate(self.db().backend_pid)
        self.assertRaises(DisconnectionError, self.db().execute,
                          "INSERT INTO person (name) VALUES ('never')")
        self.assertEqual(self.db().replays, 0)
        self.ztm.abort()
        self.assertEqual(self.count('never'), 0)

    def test_autocommit_never_replays(self):
        self.ztm.set_isolation_level('autocommit')
        self.begin_then_terminate()
        self.assertRaises(DisconnectionError, self.db().execute,
                          "INSERT INTO person (name) VALUES ('auto')")
        self.assertEqual(self.db().replays, 0)
        self.ztm.abort()
        self.assertEqual(self.count('auto'), 0)

    def test_a_statement_that_kills_its_connection_is_sent_twice_only(self):
        self.ztm.begin()
        with self.assertRaises(DisconnectionError) as caught:
            self.db().execute('SELECT pg_terminate_backend(pg_backend_pid())')
        self.assertIsInstance(caught.exception, dberrors.OperationalError)
        self.assertEqual(self.db().replays, 1)
        self.ztm.abort()
        self.ztm.begin()
        self.assertEqual(Person.get(1).name, 'sabdfl')
        self.ztm.abort()

    def test_attempts_see_no_failure_at_all(self):
        runs = []
        for attempt in transaction.manager.attempts(3):
            with attempt:
                runs.append(1)
                self.terminate(self.db().backend_pid)
                Person.get(3).karma = 99
        self.assertEqual(len(runs), 1)
        self.ztm.begin()
        self.assertEqual(Person.get(3).karma, 99)
        self.ztm.abort()


class TestFirstStatementCut(ReplayMixin, ProxiedTestCase):
    """The proxy drops the link as the first statement, which begins with
    the transaction's BEGIN, passes: before the server saw it, or after
    the server ran it (the answer never comes back)."""

    def test_cut_before_the_server_saw_it(self):
        self.ztm.begin()
        self.proxy.trap('BEGIN', forward=False)
        self.assertEqual(Person.get(1).name, 'sabdfl')
        self.ztm.commit()
        self.assertEqual(self.proxy.sprung, 1)
        self.assertEqual(self.db().replays, 1)

    def test_implicit_begin(self):
        self.ztm.uninstall()
        self.ztm = initZopeless(
            dbhost='127.0.0.1 port=%d' % self.proxy.port,
            dbname='launchpad_ftest', dbuser='launchpad')
        self.assertEqual(Person.get(1).name, 'sabdfl')
        self.ztm.commit()  # the next transaction is begun by Person.get
        self.proxy.trap('BEGIN', forward=True)
        self.assertEqual(Person.get(2).name, 'lifeless')
        self.ztm.abort()
        self.assertEqual(self.proxy.sprung, 1)
        self.assertEqual(self.db().replays, 1)

    def test_insert_cut_after_the_server_ran_it_is_written_once(self):
        # The server ran BEGIN and the INSERT, then lost the client: it
        # rolled back, so sending both again writes the row once.
        self.ztm.begin()
        self.proxy.trap('BEGIN', forward=True)
        Person(name='once', displayname='Once')
        self.ztm.commit()
        self.assertEqual(self.proxy.sprung, 1)
        self.assertEqual(self.db().replays, 1)
        self.assertEqual(self.count('once'), 1)

    def test_sql_insert_cut_after_is_written_once(self):
        self.ztm.begin()
        self.proxy.trap('BEGIN', forward=True)
        self.ztm.connection().execute(
            "INSERT INTO person (name, displayname) VALUES ('once2', 'O')")
        self.ztm.commit()
        self.assertEqual(self.count('once2'), 1)

    def test_resolved_commits_replay_too(self):
        self.ztm.uninstall()
        self.ztm = self.install(port=self.proxy.port,
                                resolve_commit_outcome=True)
        self.ztm.begin()
        self.proxy.trap('BEGIN', forward=True)
        self.ztm.connection().execute(
            'UPDATE person SET karma = karma + 1 WHERE id = 1')
        self.ztm.commit()
        self.assertEqual(self.karma(), 131)
