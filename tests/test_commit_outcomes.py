"""resolve_commit_outcome across failovers: an outcome is "committed" only
when the transaction is on the server the library talks to afterwards,
whatever the old primary had, and no prepared transaction is left behind.

The job reaches the primary through a TCPProxy whose traps lose the answer
to a statement (or the statement itself); the standby is promoted when the
job waits for a writable server.
"""

import os
import shutil
import tempfile
import threading
import time

import psycopg2
import transaction
from transaction.interfaces import TransientError

from canonical.testing.failover import FailoverTestCase
from canonical.testing.failover import rows
from canonical.database.identity import ServerConnection
from canonical.database.identity import identify
from canonical.database.interfaces import CommitOutcomeUnknownError
from canonical.database.interfaces import DisconnectionError
from canonical.database.outcomes import outcomes_for
from canonical.database.reconnect import coordinator_for
from canonical.lp import initZopeless


class _Hook:
    """A data manager that runs ``on_finish`` in its tpc_finish: after
    every vote (the database's PREPARE included), before the database's
    COMMIT PREPARED."""

    def __init__(self, on_finish):
        self.on_finish = on_finish
        self.transaction_manager = transaction.manager

    def sortKey(self):
        return 'hook'

    def abort(self, txn):
        pass

    tpc_begin = commit = tpc_vote = tpc_abort = abort

    def tpc_finish(self, txn):
        self.on_finish()


class TestExactOutcomes(FailoverTestCase):
    """resolve_commit_outcome across failovers to standbys that lag."""

    def setUp(self):
        super().setUp()
        from canonical.testing.tcpproxy import TCPProxy
        self.primary = self.servers.primary()
        self.standby = self.servers.standby(self.primary, 'n2')
        # The job reaches the primary through a proxy that can lose the
        # answer to a statement; the standby directly.
        self.proxy = TCPProxy(self.primary.host, self.primary.port)
        self.addCleanup(self.proxy.close)
        self.ztm = initZopeless(
            dbname='launchpad_ftest', dbuser='launchpad',
            dbhost='127.0.0.1,%s port=%d,%d' % (
                self.standby.host, self.proxy.port, self.standby.port),
            implicitBegin=False, resolve_commit_outcome=True)
        self.addCleanup(self.uninstall, self.ztm)

    def fail_over_when_waiting(self):
        """In the background: once the job waits for a writable server,
        the old primary crashes and the standby is promoted."""
        coordinator = coordinator_for(self.ztm.config)

        def run():
            deadline = time.monotonic() + 30
            while not coordinator.in_outage and time.monotonic() < deadline:
                time.sleep(0.01)
            self.primary.stop('immediate')
            self.standby.promote()
        thread = threading.Thread(target=run)
        thread.start()
        self.addCleanup(thread.join, 30)
        return thread

    def begin_two_phase(self, uid):
        """Begin a transaction inserting ``uid`` that a file data manager
        joins, so that it commits in two phases; the file's path."""
        from canonical.testing.filedm import FileDataManager
        path = os.path.join(tempfile.mkdtemp(), 'out')
        self.addCleanup(shutil.rmtree, os.path.dirname(path))
        self.ztm.begin()
        self.ztm.connection().execute(
            "INSERT INTO ha_unit VALUES (%s, 1)", (uid,))
        transaction.get().join(FileDataManager(path, 'x'))
        return path

    def two_phase_whose_prepare_the_standby_lacks(self, uid):
        """Start a two-phase commit of ``uid`` (with a file data manager,
        whose file's path is returned) that the standby will not receive:
        the COMMIT PREPARED is lost, then the primary crashes and the
        standby is promoted while commit() waits."""
        self.standby.wait_replayed(self.primary.wal_lsn())
        self.standby.pause_streaming()
        path = self.begin_two_phase(uid)
        self.proxy.trap('COMMIT PREPARED', forward=False, then_refuse=True)
        self.fail_over_when_waiting()
        return path

    def commit_with_only_the_prepare_replicated(self, uid):
        """Commit ``uid`` in two phases (with a file data manager); the
        standby receives the PREPARE, then stops streaming before the
        COMMIT PREPARED."""
        def between_prepare_and_commit_prepared():
            self.standby.wait_replayed(self.primary.wal_lsn())
            self.standby.pause_streaming()
        self.begin_two_phase(uid)
        transaction.get().join(_Hook(between_prepare_and_commit_prepared))
        self.ztm.commit()

    def prepared_left(self, server):
        return rows(server, 'SELECT count(*) FROM pg_prepared_xacts')

    def test_a_commit_the_new_primary_lacks_is_not_committed(self):
        # The primary commits, then waits for its synchronous standby,
        # which receives nothing more; the primary crashes before it
        # answers, and the standby is promoted without the transaction.
        self.ztm.uninstall()  # no proxy here
        ztm = self.install(self.primary, self.standby)
        connected, go, outcome = threading.Event(), threading.Event(), []

        def job():
            ztm.begin()  # this thread's connection and slot, replicated
            ztm.commit()
            connected.set()
            go.wait(30)
            ztm.begin()
            ztm.connection().execute("INSERT INTO ha_unit VALUES ('a', 1)")
            try:
                ztm.commit()
                outcome.append('committed')
            except Exception as e:
                outcome.append(e)
                ztm.abort()
        thread = threading.Thread(target=job)
        thread.start()
        connected.wait(30)
        self.primary.set_synchronous([self.standby.name])
        self.standby.pause_streaming()
        go.set()
        deadline = time.monotonic() + 30
        while rows(self.primary, "SELECT count(*) FROM pg_stat_activity "
                   "WHERE wait_event = 'SyncRep' AND query = 'COMMIT'"
                   ) != ['1']:
            self.assertLess(time.monotonic(), deadline)
            time.sleep(0.02)
        self.primary.stop('immediate')
        self.standby.promote()
        thread.join(30)
        self.assertEqual(len(outcome), 1)
        self.assertIsInstance(outcome[0], DisconnectionError)
        self.assertIsInstance(outcome[0], TransientError)
        self.assertIn('not on the server now', str(outcome[0]))
        self.assertEqual(rows(self.standby, 'SELECT uid FROM ha_unit'), [])
        self.assertEqual(self.prepared_left(self.standby), ['0'])
        # The old primary did commit it: only the marker told them apart.
        self.primary.start()
        self.assertEqual(rows(self.primary, 'SELECT uid FROM ha_unit'),
                         ['a'])

    def test_a_commit_the_new_primary_has_is_committed(self):
        self.ztm.begin()
        self.ztm.connection().execute("INSERT INTO ha_unit VALUES ('b', 1)")
        # The COMMIT reaches the primary, its answer does not.
        self.proxy.trap('COMMIT', forward=True, then_refuse=True)
        # The standby keeps streaming: it has what the primary committed.
        self.fail_over_when_waiting()
        self.ztm.commit()
        self.assertEqual(rows(self.standby, 'SELECT uid FROM ha_unit'),
                         ['b'])
        self.assertEqual(self.prepared_left(self.standby), ['0'])
        self.assertEqual(outcomes_for(self.ztm.config).lookups, 1)

    def test_prepared_on_the_new_primary_is_finished_at_once(self):
        # Two-phase, with another data manager: the PREPARE reached the
        # standby, the COMMIT PREPARED never left.
        path = self.begin_two_phase('c')
        self.proxy.trap('COMMIT PREPARED', forward=False, then_refuse=True)
        self.fail_over_when_waiting()
        self.ztm.commit()  # decided: finished on the new primary
        self.assertEqual(rows(self.standby, 'SELECT uid FROM ha_unit'),
                         ['c'])
        self.assertEqual(self.prepared_left(self.standby), ['0'])
        self.assertTrue(os.path.exists(path))

    def test_prepared_left_by_a_later_failover_is_finished_by_begin(self):
        # The case: COMMIT PREPARED was acknowledged by the
        # primary, but only the PREPARE reached the standby promoted next.
        self.commit_with_only_the_prepare_replicated('d')
        self.primary.stop('immediate')
        self.proxy.refuse()
        self.standby.promote()
        self.assertEqual(self.prepared_left(self.standby), ['1'])
        self.ztm.begin()  # reconnects to the new primary: finished first
        self.assertEqual(self.ztm.connection().execute(
            "SELECT uid FROM ha_unit").fetchall(), [('d',)])
        self.ztm.abort()
        self.assertEqual(self.prepared_left(self.standby), ['0'])

    def test_an_earlier_prepared_transaction_does_not_hide_the_next(self):
        # Only the PREPARE of one transaction reached the standby; the
        # next transaction of the same connection loses its COMMIT's
        # answer in the failover.  On the new primary the first, still
        # prepared, holds the connection's marker row: it is finished
        # before the second is looked up, which is then told at once.
        self.commit_with_only_the_prepare_replicated('h')
        self.ztm.begin()
        self.ztm.connection().execute("INSERT INTO ha_unit VALUES ('i', 1)")
        self.proxy.trap('COMMIT', forward=True, then_refuse=True)
        self.fail_over_when_waiting()
        with self.assertRaises(DisconnectionError) as caught:
            self.ztm.commit()
        self.assertIn('not on the server now', str(caught.exception))
        self.assertEqual(rows(self.standby, 'SELECT uid FROM ha_unit'),
                         ['h'])
        self.assertEqual(self.prepared_left(self.standby), ['0'])

    def test_a_decided_transaction_the_new_primary_lacks_is_lost(self):
        # Two-phase again, but the standby never received the PREPARE:
        # the file data manager has committed its part, the database's
        # part is gone with the old primary.  Only a person can reconcile
        # that, so commit() says so instead of reporting success.
        from canonical.database.interfaces import TransactionLostError
        self.ztm.begin()  # the marker slot exists and has replicated
        self.ztm.commit()
        path = self.two_phase_whose_prepare_the_standby_lacks('f')
        with self.assertRaises(TransactionLostError) as caught:
            self.ztm.commit()
        self.assertIn('Reconcile them by hand', str(caught.exception))
        self.assertTrue(os.path.exists(path))  # the other part committed
        self.assertEqual(rows(self.standby, 'SELECT uid FROM ha_unit'), [])
        self.assertEqual(self.prepared_left(self.standby), ['0'])
        # The old primary still holds the PREPARE: that is the half a
        # person must look at, and the error names its gid.
        self.primary.start()
        gids = rows(self.primary, 'SELECT gid FROM pg_prepared_xacts')
        self.assertEqual(len(gids), 1)
        self.assertIn(gids[0], str(caught.exception))

    def test_no_pid_is_looked_up_on_another_server(self):
        bouncer = self.servers.bouncer(self.primary)
        pooled = psycopg2.connect(bouncer.dsn('launchpad_ftest'),
                                  connection_factory=ServerConnection)
        direct = psycopg2.connect(self.primary.dsn('launchpad_ftest'),
                                  connection_factory=ServerConnection)
        self.addCleanup(pooled.close)
        self.addCleanup(direct.close)
        through, there = identify(pooled), identify(direct)
        self.assertTrue(through.pooled)
        self.assertNotEqual(through.backend_pid, pooled.info.backend_pid)
        self.assertIsNone(through.backend_of(there))  # PgBouncer's pid
        self.assertEqual(there.backend_of(there), there.backend_pid)
        self.primary.stop('immediate')
        self.standby.promote()
        after = identify(psycopg2.connect(
            self.standby.dsn('launchpad_ftest'),
            connection_factory=ServerConnection))
        self.assertEqual(after.timeline, there.timeline + 1)
        self.assertIsNone(there.backend_of(after))  # another server

    def as_password_role(self):
        """The job logs in as a role that owns nothing: it may write
        ha_unit, and may not create tables."""
        from canonical.testing.cluster import conf
        self.primary.psql('GRANT INSERT, SELECT ON ha_unit TO %s'
                          % conf.PASSWORD_ROLE, dbname='launchpad_ftest')
        self.ztm.uninstall()
        self.ztm = initZopeless(
            dbname='launchpad_ftest', dbuser=conf.PASSWORD_ROLE,
            password=conf.PASSWORD_ROLE_PASSWORD,
            dbhost='127.0.0.1,%s port=%d,%d' % (
                self.standby.host, self.proxy.port, self.standby.port),
            implicitBegin=False, resolve_commit_outcome=True)
        self.addCleanup(self.uninstall, self.ztm)

    def test_without_its_table_an_outcome_lost_in_a_failover_is_unknown(self):
        # A role that may not create the marker table: transactions
        # PREPARE, and a COMMIT PREPARED lost in a failover to a standby
        # that lacks the PREPARE is reported unknown, not committed; the
        # error says why and what to do, as resolve_commit_outcome is on.
        from canonical.database.outcomes import TABLE
        self.as_password_role()
        self.ztm.begin()
        self.assertIsNone(self.ztm.connection().outcome_slot)
        self.assertIn('may not create it', '\n'.join(self.log.lines()))
        self.ztm.commit()
        self.two_phase_whose_prepare_the_standby_lacks('e')
        with self.assertRaises(CommitOutcomeUnknownError) as caught:
            self.ztm.commit()
        self.assertIn('may not create the table %s' % TABLE,
                      str(caught.exception))
        self.assertIn('create it once as its owner', str(caught.exception))
        self.assertNotIn('resolve_commit_outcome would tell',
                         str(caught.exception))
        self.assertEqual(rows(self.standby, 'SELECT uid FROM ha_unit'), [])
        self.assertEqual(self.prepared_left(self.standby), ['0'])

    def test_with_its_table_made_by_its_owner_the_same_role_is_told(self):
        # The same role and failover once the table's owner made it and
        # granted it, as the warning asks: the answer is exact.
        from canonical.testing.cluster import conf
        from canonical.database.interfaces import TransactionLostError
        from canonical.database.outcomes import CREATE_SQL, TABLE
        self.primary.psql('%s; GRANT SELECT, INSERT, UPDATE, DELETE ON %s '
                          'TO %s' % (CREATE_SQL, TABLE, conf.PASSWORD_ROLE),
                          dbname='launchpad_ftest', user='launchpad')
        self.as_password_role()
        self.ztm.begin()  # the slot exists and has replicated
        self.assertIsNotNone(self.ztm.connection().outcome_slot)
        self.ztm.commit()
        self.two_phase_whose_prepare_the_standby_lacks('g')
        with self.assertRaises(TransactionLostError):
            self.ztm.commit()
        self.assertEqual(rows(self.standby, 'SELECT uid FROM ha_unit'), [])
        self.assertEqual(self.prepared_left(self.standby), ['0'])


class TestMarkerTableFirstUse(FailoverTestCase):

    def test_threads_creating_it_at_once(self):
        # Threads of a new process open their first sessions together: one
        # of them creates the table, the others must not fail on it
        # (CREATE TABLE IF NOT EXISTS is not safe against a concurrent
        # one: "duplicate key value violates unique constraint").
        from canonical.database.outcomes import TABLE
        from canonical.database.perdatabase import forget_all
        primary = self.servers.primary()
        errors = []
        for round in range(4):
            primary.psql('DROP TABLE IF EXISTS %s' % TABLE,
                         dbname='launchpad_ftest')
            forget_all()  # a new process, which has not looked yet
            ztm = self.install(primary)
            barrier = threading.Barrier(8)

            def first_unit():
                barrier.wait()
                try:
                    ztm.begin()
                    ztm.connection().execute('SELECT 1')
                    ztm.commit()
                except Exception as e:  # reported by the test
                    errors.append(e)
            threads = [threading.Thread(target=first_unit)
                       for i in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
            self.uninstall(ztm)
        self.assertEqual(errors, [])

    def test_a_server_that_lost_the_table_gets_it_again(self):
        # A standby promoted before the table's creation replicated to it:
        # the process made the table long ago, the new primary lacks it.
        # Its next session makes it there instead of failing every begin().
        from canonical.database.outcomes import TABLE
        primary = self.servers.primary()
        ztm = self.install(primary)
        ztm.begin()
        ztm.connection().execute('SELECT 1')
        ztm.commit()
        primary.psql("SELECT pg_terminate_backend(pid) FROM "
                     "pg_stat_activity WHERE datname = 'launchpad_ftest' "
                     "AND pid <> pg_backend_pid(); DROP TABLE %s" % TABLE,
                     dbname='launchpad_ftest')
        ztm.begin()
        self.assertIsNotNone(ztm.connection().outcome_slot)
        ztm.connection().execute('SELECT 1')
        ztm.commit()
        self.assertEqual(rows(primary, "SELECT count(*) FROM %s" % TABLE),
                         ['1'])
