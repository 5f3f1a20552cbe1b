"""Jobs that write, across failovers: what each event costs them.

Every test makes its own primary and standbys (canonical.database.ftests.
servers) and runs a UnitWriter, a job inserting one row per unit of work
through transaction.manager.attempts(); the rows tell which server took
each unit.  Events happen while it writes; the assertions say how many
attempts an event may cost and that every acknowledged unit is on the
server the job writes to afterwards.
"""

import logging
import os
import shutil
import threading
import time

import psycopg2
import transaction
from sqlobject import dberrors
from transaction.interfaces import TransientError

from canonical.database.ftests.logcapture import LogCapture
from canonical.database.ftests.servers import ServersTestCase
from canonical.database.ftests.writer import UnitWriter
from canonical.database.interfaces import CommitOutcomeUnknownError
from canonical.database.interfaces import DatabaseUnavailableError
from canonical.database.interfaces import DisconnectionError
from canonical.database.interfaces import ReadOnlyServerError
from canonical.database.hosts import servers_for
from canonical.database.identity import ServerConnection
from canonical.database.identity import identify
from canonical.database.outcomes import outcomes_for
from canonical.database.reconnect import coordinator_for
from canonical.lp import initZopeless


def dbhost(*servers, **libpq):
    """A dbhost naming ``servers`` in order, as users write it."""
    text = '%s port=%s' % (','.join(s.host for s in servers),
                           ','.join(str(s.port) for s in servers))
    for key, value in libpq.items():
        text += ' %s=%s' % (key, value)
    return text


def rows(server, sql):
    return server.psql(sql, dbname='launchpad_ftest').split()


class FailoverTestCase(ServersTestCase):

    def setUp(self):
        super().setUp()
        self.log = LogCapture('canonical.database')
        self.addCleanup(self.log.uninstall)

    def install(self, *servers, libpq=None, **options):
        # Exact outcomes, as a job that must not lose or repeat a unit
        # across a failover runs.
        settings = dict(dbname='launchpad_ftest', dbuser='launchpad',
                        implicitBegin=False, resolve_commit_outcome=True)
        settings.update(options)
        ztm = initZopeless(dbhost=dbhost(*servers, **(libpq or {})),
                           **settings)
        self.addCleanup(self._uninstall, ztm)
        return ztm

    @staticmethod
    def _uninstall(ztm):
        ztm.uninstall()
        transaction.manager.explicit = False

    def writer(self, ztm, **kw):
        writer = UnitWriter(ztm, **kw)
        writer.start()
        self.addCleanup(writer.stop)
        return writer

    def assertAllOn(self, server, writer, unknown=0):
        """Every unit the writer saw committed is on ``server``, once; at
        most ``unknown`` units ended with their outcome unknown."""
        writer.stop()
        found = set(rows(server, 'SELECT uid FROM ha_unit'))
        missing = [c.uid for c in writer.committed if c.uid not in found]
        self.assertEqual(missing, [])
        self.assertLessEqual(len(writer.failed), unknown, writer.failed)
        for error in writer.failed:
            self.assertIsInstance(error, CommitOutcomeUnknownError)

    def assertCostAtMost(self, writer, count, *kinds):
        self.assertLessEqual(len(writer.errors), count, writer.errors)
        for error in writer.errors:
            self.assertIsInstance(error, kinds or (TransientError,))


class TestWritersReachThePrimary(FailoverTestCase):

    def test_fenced_primary_costs_the_unit_in_flight(self):
        primary = self.servers.primary()
        standby = self.servers.standby(primary, 'n2', synchronous=True)
        ztm = self.install(primary, standby)
        writer = self.writer(ztm)
        writer.wait_for_commits(5, port=primary.port)
        primary.fence()
        # Writes stop: nothing takes them until the standby is promoted.
        coordinator = coordinator_for(ztm.config)
        writer.wait_until(lambda w: coordinator.in_outage)
        standby.wait_replayed(primary.wal_lsn())
        standby.promote()
        writer.wait_for_commits(5, port=standby.port)
        self.assertCostAtMost(writer, 1, ReadOnlyServerError)
        for error in writer.errors:
            self.assertEqual(error.pgcode, '25006')
        self.assertAllOn(standby, writer)
        self.assertEqual(coordinator.last_failure, 'read_only')

    def test_demoted_primary_after_a_switchover(self):
        primary = self.servers.primary()
        standby = self.servers.standby(primary, 'n2', synchronous=True)
        ztm = self.install(primary, standby)
        writer = self.writer(ztm)
        writer.wait_for_commits(5, port=primary.port)
        primary.stop('fast')
        standby.promote()
        writer.wait_for_commits(3, port=standby.port)
        primary.follow(standby)  # back as a standby of its successor
        writer.wait_for_commits(3, port=standby.port)
        # The stop ends the unit in flight, often while its COMMIT waits
        # for the synchronous standby: the outcome marker tells, on the
        # new primary, whether it committed.
        self.assertCostAtMost(writer, 1, DisconnectionError)
        self.assertAllOn(standby, writer)
        self.assertEqual(rows(primary, 'SELECT pg_is_in_recovery()'), ['t'])

    def test_a_fence_between_units_costs_nothing(self):
        primary = self.servers.primary()
        standby = self.servers.standby(primary, 'n2', synchronous=True)
        ztm = self.install(primary, standby)
        ztm.begin()
        ztm.connection().execute("INSERT INTO ha_unit VALUES ('a', 1)")
        ztm.commit()
        primary.fence()
        standby.promote()
        # The first statement (with its BEGIN) meets the fence: nothing of
        # the unit ran, so it is sent again on the new primary.
        ztm.begin()
        port = ztm.connection().execute(
            "INSERT INTO ha_unit VALUES ('b', inet_server_port()) "
            "RETURNING port").fetchone()[0]
        ztm.commit()
        self.assertEqual(port, standby.port)
        self.assertIn('WARNING canonical.database.connection Lost the '
                      'connection', '\n'.join(self.log.lines()))

    def test_only_read_only_servers_left(self):
        primary = self.servers.primary()
        standby = self.servers.standby(primary, 'n2')
        ztm = self.install(standby, reconnect_timeout=0.5)
        with self.assertRaises(DatabaseUnavailableError) as caught:
            ztm.begin()
        message = str(caught.exception)
        self.assertNotIn('Check that the server is running', message)
        self.assertIn('refuses writes', message)
        self.assertIn('Promote a standby', message)

    def test_readers_may_ask_for_a_standby(self):
        primary = self.servers.primary()
        standby = self.servers.standby(primary, 'n2')
        ztm = self.install(standby, libpq={'target_session_attrs': 'any'},
                           resolve_commit_outcome=False)
        ztm.begin()
        connection = ztm.connection()
        backend = connection.raw.info.backend_pid
        self.assertEqual(connection.execute(
            'SELECT pg_is_in_recovery()').fetchone()[0], True)
        ztm.commit()
        ztm.begin()
        with self.assertRaises(dberrors.Error) as caught:
            ztm.connection().execute("INSERT INTO ha_unit VALUES ('x', 1)")
        self.assertNotIsInstance(caught.exception, TransientError)
        self.assertEqual(caught.exception.pgcode, '25006')
        ztm.abort()
        ztm.begin()  # the same session: the reader wanted a standby
        self.assertEqual(ztm.connection().raw.info.backend_pid, backend)
        ztm.abort()


class TestErrorsKeepTheirSqlstate(FailoverTestCase):

    def test_sqlobject_errors_carry_pgcode(self):
        from canonical.launchpad.database import Person
        primary = self.servers.primary()
        ztm = self.install(primary)
        ztm.begin()
        with self.assertRaises(dberrors.IntegrityError) as caught:
            Person(name='sabdfl', displayname='again')
        self.assertEqual(caught.exception.pgcode, '23505')
        self.assertIsInstance(caught.exception.__context__, psycopg2.Error)
        ztm.abort()

    def test_a_write_refused_as_read_only_is_a_transient_error(self):
        # A server that says, at a write, that it takes none: the session
        # is dropped and the unit may run again.  (Fences and demotions
        # show before the first statement, or make it run again; a report
        # can be stale behind a pooler, and servers before 14 send none.
        # The trigger gives the same error on demand, later in a unit.)
        primary = self.servers.primary()
        primary.psql(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
            "$$BEGIN RAISE EXCEPTION 'cannot execute INSERT in a read-only "
            "transaction' USING ERRCODE = 'read_only_sql_transaction'; "
            "END$$; CREATE TRIGGER refuse BEFORE INSERT ON ha_unit FOR "
            "EACH ROW EXECUTE FUNCTION refuse()", dbname='launchpad_ftest')
        ztm = self.install(primary)
        ztm.begin()
        connection = ztm.connection()
        connection.execute('SELECT 1')
        with self.assertRaises(ReadOnlyServerError) as caught:
            connection.execute("INSERT INTO ha_unit VALUES ('x', 1)")
        error = caught.exception
        self.assertIsInstance(error, TransientError)
        self.assertIsInstance(error, dberrors.OperationalError)
        self.assertEqual(error.pgcode, '25006')
        self.assertIn('read-only transaction', str(error))
        self.assertIsNone(connection.raw)  # dropped: it can never write
        ztm.abort()


class TestReconnectedIsLogged(FailoverTestCase):

    def test_after_a_failed_first_statement(self):
        from canonical.database.ftests.tcpproxy import TCPProxy
        primary = self.servers.primary()
        proxy = TCPProxy(primary.host, primary.port)
        self.addCleanup(proxy.close)
        ztm = initZopeless(dbname='launchpad_ftest', dbuser='launchpad',
                           dbhost='127.0.0.1 port=%d' % proxy.port,
                           implicitBegin=False)
        self.addCleanup(self._uninstall, ztm)
        ztm.begin()
        ztm.connection().execute('SELECT 1')
        ztm.commit()
        proxy.trap(statements=('BEGIN',), forward=False)
        ztm.begin()
        # The BEGIN, travelling with the first statement, dies with its
        # link: both are sent again at once, on a new connection.
        self.assertEqual(ztm.connection().execute('SELECT 1').fetchone(),
                         (1,))
        ztm.commit()
        self.assertEqual(proxy.sprung, 1)
        lines = self.log.lines(logging.INFO)
        self.assertTrue(any('Reconnected to' in line for line in lines),
                        lines)
        self.assertTrue(any('Lost the connection' in line for line in lines),
                        lines)


class TestSilentPrimary(FailoverTestCase):
    """The primary runs in a network namespace, which vanishes silently."""

    def setUp(self):
        super().setUp()
        self.host = self.servers.host()
        self.primary = self.servers.primary(netns=self.host)

    def test_failover_within_six_seconds_of_the_loss(self):
        standby = self.servers.standby(self.primary, 'n2', synchronous=True)
        ztm = self.install(self.primary, standby)
        writer = self.writer(ztm)
        writer.wait_for_commits(10, port=self.primary.port)
        lost = time.monotonic()
        self.host.cut()
        standby.promote()
        writer.wait_for_commits(1, port=standby.port)
        first = [c for c in writer.committed if c.port == standby.port][0]
        self.assertLess(first.at - lost, 6.0)
        self.assertCostAtMost(writer, 1, DisconnectionError)
        self.assertAllOn(standby, writer)
        servers = servers_for(ztm.config)
        self.assertEqual(servers.suspects(), ['%s:%s' % (
            self.primary.host, self.primary.port)])
        print('\n  silent primary: first commit on the new primary %.2f s '
              'after the loss' % (first.at - lost), end=' ')

    def test_a_healed_partition_is_never_written_to(self):
        standby = self.servers.standby(self.primary, 'n2')
        # Long keepalives, so that a connection to the old primary
        # outlives the partition, as it would a short one.
        libpq = {'keepalives_idle': 30, 'tcp_user_timeout': 0}
        ztm = self.install(self.primary, standby, libpq=libpq)
        ztm.begin()  # this thread's connection: the old primary
        ztm.connection().execute("INSERT INTO ha_unit VALUES ('a', 1)")
        ztm.commit()
        self.host.cut()
        standby.promote()
        other = []

        def elsewhere():
            # Another thread connects: the old primary times out, the new
            # one (a later timeline) takes the write.
            ztm.begin()
            other.append(ztm.connection().execute(
                "INSERT INTO ha_unit VALUES ('b', inet_server_port()) "
                "RETURNING port").fetchone()[0])
            ztm.commit()
        thread = threading.Thread(target=elsewhere)
        thread.start()
        thread.join(30)
        self.assertEqual(other, [standby.port])
        self.host.restore()  # the old primary is back, still read-write
        self.assertEqual(rows(self.primary, 'SELECT pg_is_in_recovery()'),
                         ['f'])
        # This thread's old connection survived; its next begin() leaves
        # it without a round trip, knowing the timeline it was on.
        ztm.begin()
        port = ztm.connection().execute(
            "INSERT INTO ha_unit VALUES ('c', inet_server_port()) "
            "RETURNING port").fetchone()[0]
        ztm.commit()
        self.assertEqual(port, standby.port)
        self.assertIn('demoted primary', '\n'.join(self.log.lines()))
        # With the new primary down, only the old one answers: refused.
        standby.stop('fast')
        ztm.uninstall()
        ztm = self.install(self.primary, standby, libpq=libpq,
                           reconnect_timeout=1)
        with self.assertRaises(DatabaseUnavailableError) as caught:
            ztm.begin()
        self.assertIn('demoted primary', str(caught.exception))
        self.assertNotIn('Check that the server is running',
                         str(caught.exception))
        self.assertEqual(rows(self.primary, 'SELECT uid FROM ha_unit'),
                         ['a'])
        self.assertGreaterEqual(servers_for(ztm.config).stale_refused, 1)

    def test_a_silent_host_costs_its_timeout_once(self):
        # The first host of the list is a standby that vanished; the
        # primary is the second.
        standby = self.servers.standby(self.primary, 'n2')
        self.primary.stop('immediate')
        standby.promote()
        ztm = self.install(self.primary, standby)
        self.host.cut()
        started = time.monotonic()
        ztm.begin()
        ztm.abort()
        first = time.monotonic() - started
        servers = servers_for(ztm.config)
        self.assertEqual(len(servers.suspects()), 1)
        connection = ztm.connection
        times = []
        for i in range(3):
            ztm.begin()
            standby.psql('SELECT pg_terminate_backend(%d)'
                         % ztm.connection().raw.info.backend_pid)
            ztm.abort()
            started = time.monotonic()
            ztm.begin()
            times.append(time.monotonic() - started)
            ztm.abort()
        self.assertGreaterEqual(first, 1.9)  # connect_timeout, once
        self.assertLess(max(times), 1.0, times)
        self.host.restore()
        self.primary.start()
        deadline = time.monotonic() + 10
        while servers.suspects() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(servers.suspects(), [])
        del connection


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
        from canonical.database.ftests.tcpproxy import TCPProxy
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
        self.addCleanup(self._uninstall, self.ztm)

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
        from canonical.database.ftests.filedm import FileDataManager
        import tempfile
        path = os.path.join(tempfile.mkdtemp(), 'out')
        self.addCleanup(shutil.rmtree, os.path.dirname(path))
        self.ztm.begin()
        self.ztm.connection().execute("INSERT INTO ha_unit VALUES ('c', 1)")
        transaction.get().join(FileDataManager(path, 'x'))
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
        from canonical.database.ftests.filedm import FileDataManager
        import tempfile
        path = os.path.join(tempfile.mkdtemp(), 'out')
        self.addCleanup(shutil.rmtree, os.path.dirname(path))

        def between_prepare_and_commit_prepared():
            self.standby.wait_replayed(self.primary.wal_lsn())
            self.standby.pause_streaming()
        self.ztm.begin()
        self.ztm.connection().execute("INSERT INTO ha_unit VALUES ('d', 1)")
        transaction.get().join(FileDataManager(path, 'x'))
        transaction.get().join(_Hook(between_prepare_and_commit_prepared))
        self.ztm.commit()
        self.primary.stop('immediate')
        self.proxy.refuse()
        self.standby.promote()
        self.assertEqual(self.prepared_left(self.standby), ['1'])
        self.ztm.begin()  # reconnects to the new primary: finished first
        self.assertEqual(self.ztm.connection().execute(
            "SELECT uid FROM ha_unit").fetchall(), [('d',)])
        self.ztm.abort()
        self.assertEqual(self.prepared_left(self.standby), ['0'])

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

    def test_without_its_table_an_outcome_lost_in_a_failover_is_unknown(self):
        # A role that may not create the marker table: transactions
        # PREPARE, and a COMMIT PREPARED lost in a failover to a standby
        # that lacks the PREPARE is reported unknown, not committed.
        from canonical.database.cluster import conf
        from canonical.database.ftests.filedm import FileDataManager
        import tempfile
        self.primary.psql('GRANT INSERT, SELECT ON ha_unit TO %s'
                          % conf.PASSWORD_ROLE, dbname='launchpad_ftest')
        self.ztm.uninstall()
        self.ztm = initZopeless(
            dbname='launchpad_ftest', dbuser=conf.PASSWORD_ROLE,
            password=conf.PASSWORD_ROLE_PASSWORD,
            dbhost='127.0.0.1,%s port=%d,%d' % (
                self.standby.host, self.proxy.port, self.standby.port),
            implicitBegin=False, resolve_commit_outcome=True)
        self.addCleanup(self._uninstall, self.ztm)
        path = os.path.join(tempfile.mkdtemp(), 'out')
        self.addCleanup(shutil.rmtree, os.path.dirname(path))
        self.ztm.begin()
        self.assertIsNone(self.ztm.connection().outcome_slot)
        self.assertIn('may not create it', '\n'.join(self.log.lines()))
        self.ztm.commit()
        self.standby.wait_replayed(self.primary.wal_lsn())
        self.standby.pause_streaming()
        self.ztm.begin()
        self.ztm.connection().execute("INSERT INTO ha_unit VALUES ('e', 1)")
        transaction.get().join(FileDataManager(path, 'x'))
        self.proxy.trap('COMMIT PREPARED', forward=False, then_refuse=True)
        self.fail_over_when_waiting()
        self.assertRaises(CommitOutcomeUnknownError, self.ztm.commit)
        self.assertEqual(rows(self.standby, 'SELECT uid FROM ha_unit'), [])
        self.assertEqual(self.prepared_left(self.standby), ['0'])
