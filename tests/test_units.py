"""Contracts and the small parts against the real server: interfaces
verified, clean-up, debug logging, start-up recovery of orphaned prepared
transactions, configuration copies, one object per database.  The
reconnect machinery's parts without a server are in
test_reconnect_units.py."""

import subprocess
import sys
import threading
import unittest

import psycopg2
import transaction
from transaction.interfaces import ISavepointDataManager
from zope.interface.verify import verifyObject

import canonical.lp
from canonical.database import reconnect
from canonical.database import twophase
from canonical.database.config import DatabaseConfig
from canonical.database.connection import ReconnectingConnection
from canonical.database.hosts import servers_for
from canonical.database.outcomes import outcomes_for
from canonical.database.perdatabase import forget_all
from canonical.database.prepared import PreparedTransactions
from canonical.database.prepared import prepared_for
from canonical.database.interfaces import ConfigurationError
from canonical.database.interfaces import IDatabaseConfig
from canonical.database.interfaces import ICommitOutcomes
from canonical.database.interfaces import IDatabaseConnection
from canonical.database.interfaces import IDatabaseServers
from canonical.database.interfaces import IServerIdentity
from canonical.database.interfaces import IPreparedTransactions
from canonical.database.interfaces import IReconnectCoordinator
from canonical.database.interfaces import IZopelessDataManager
from canonical.database.interfaces import IZopelessTransactionManager
from canonical.launchpad.ftests.harness import LaunchpadTestSetup
from canonical.lp import initZopeless
from canonical.testing.layers import LaunchpadLayer


class DatabaseTestCase(unittest.TestCase):
    """A fresh sample database; the layer cleans up after each test."""

    layer = LaunchpadLayer

    def prepare_elsewhere(self, setup, karma):
        """A transaction prepared by another connection; its gid names
        this live process."""
        conn = setup.connect()
        gid = twophase.new_gid()
        conn.tpc_begin(gid)
        conn.cursor().execute('UPDATE person SET karma = %s WHERE id = 5',
                              (karma,))
        conn.tpc_prepare()
        conn.reset()
        return gid


class TestContracts(DatabaseTestCase):

    def test_implementations_provide_their_interfaces(self):
        ztm = initZopeless(implicitBegin=False)
        self.assertTrue(verifyObject(IZopelessTransactionManager, ztm))
        self.assertTrue(verifyObject(IDatabaseConnection,
                                     ReconnectingConnection(ztm.config)))
        ztm.begin()
        dm = transaction.get()._resources[0]
        self.assertTrue(verifyObject(IZopelessDataManager, dm))
        self.assertTrue(verifyObject(ISavepointDataManager, dm))
        raw = ztm.connection().raw
        self.assertTrue(verifyObject(IServerIdentity, raw.server))
        self.assertFalse(raw.server.pooled)
        self.assertEqual(raw.server.backend_pid, raw.info.backend_pid)
        self.assertTrue(verifyObject(IDatabaseServers,
                                     servers_for(ztm.config)))
        self.assertTrue(verifyObject(ICommitOutcomes,
                                     outcomes_for(ztm.config)))
        ztm.abort()

    def test_each_transaction_marks_its_slot(self):
        ztm = initZopeless(implicitBegin=False, resolve_commit_outcome=True)
        ztm.begin()
        db = ztm.connection()
        slot, token = db.outcome_slot, db.outcome_token
        self.assertTrue(slot.startswith('zopeless:'))
        self.assertTrue(token.startswith('zopeless:'))
        db.execute("SELECT 1")
        ztm.commit()
        other = psycopg2.connect(**ztm.config.connect_kwargs())
        cursor = other.cursor()
        cursor.execute('SELECT gid FROM zopeless_commit_outcome '
                       'WHERE slot = %s', (slot,))
        self.assertEqual(cursor.fetchone(), (token,))
        other.close()
        ztm.begin()
        # The marker went with BEGIN, before the first statement.
        token = ztm.connection().outcome_token
        self.assertEqual(ztm.connection().execute(
            'SELECT gid FROM zopeless_commit_outcome WHERE slot = %s',
            (slot,)).fetchone(), (token,))
        ztm.abort()
        ztm.uninstall()
        # Without resolve_commit_outcome: no slot, no token.
        ztm = initZopeless(implicitBegin=False)
        ztm.begin()
        self.assertIsNone(ztm.connection().outcome_slot)
        self.assertIsNone(ztm.connection().outcome_token)
        ztm.abort()

    def test_healthy_begin_opens_no_new_connection(self):
        ztm = initZopeless(implicitBegin=False)
        coordinator = reconnect.coordinator_for(ztm.config)
        ztm.begin()
        ztm.abort()
        before = coordinator.attempts
        for i in range(20):
            ztm.begin()
            ztm.commit()
        self.assertEqual(coordinator.attempts, before)


class TestCleanUp(DatabaseTestCase):

    def test_cleanup_undoes_initzopeless(self):
        from zope.testing.cleanup import cleanUp
        ztm = initZopeless(implicitBegin=False)
        ztm.begin()
        coordinator = reconnect.coordinator_for(ztm.config)
        self.assertTrue(transaction.manager.explicit)
        cleanUp()
        self.assertFalse(ztm.installed)
        self.assertIsNone(canonical.lp.installedTransactionManager())
        self.assertFalse(transaction.manager.explicit)
        self.assertIsNot(reconnect.coordinator_for(ztm.config), coordinator)
        # zope.component forgot the ZCML's adapters: they come back.
        again = initZopeless(implicitBegin=False)
        self.assertIsNot(again, ztm)
        again.begin()
        self.assertEqual(again.connection().execute('SELECT 1').fetchone(),
                         (1,))
        again.abort()


class TestDebug(DatabaseTestCase):

    def test_debug_logs_the_sql(self):
        from canonical.testing.logcapture import LogCapture
        from canonical.launchpad.database import Person
        log = LogCapture('canonical.database.sql')
        self.addCleanup(log.uninstall)
        ztm = initZopeless(implicitBegin=False, debug=True)
        ztm.begin()
        Person.get(2)
        ztm.abort()
        self.assertTrue(any('FROM person WHERE' in line and 'DEBUG' in line
                            for line in log.lines()), log.lines())

    def test_keepalives_are_on_by_default(self):
        ztm = initZopeless(implicitBegin=False)
        ztm.begin()
        params = ztm.connection().raw.get_dsn_parameters()
        ztm.abort()
        self.assertEqual(params['keepalives'], '1')
        self.assertEqual(params['keepalives_idle'], '2')
        self.assertEqual(params['tcp_user_timeout'], '3000')
        self.assertEqual(params['connect_timeout'], '2')
        self.assertEqual(params['target_session_attrs'], 'read-write')
        self.assertEqual(params['application_name'], 'zopeless')


class TestOrphanRecovery(DatabaseTestCase):

    def dead_pid(self):
        child = subprocess.Popen([sys.executable, '-c', 'pass'])
        child.wait()
        return child.pid

    def test_prepared_transactions_of_dead_processes_are_committed(self):
        setup = LaunchpadTestSetup()
        conn = setup.connect()
        gid = '%s:%s:%d:1:1' % (twophase.GID_PREFIX, twophase._HOST,
                                self.dead_pid())
        alive = '%s:%s:%d:1:2' % (twophase.GID_PREFIX, twophase._HOST, 1)
        for name, karma in ((gid, 777), (alive, 888)):
            conn.tpc_begin(name)
            conn.cursor().execute(
                'UPDATE person SET karma = %s WHERE id = %s',
                (karma, 3 if karma == 777 else 4))
            conn.tpc_prepare()
            conn.reset()
        # A process that has not connected yet recovers on its first
        # connection: forgetting the per-database objects stands for it.
        forget_all()
        config = DatabaseConfig(dbname='launchpad_ftest', dbuser='launchpad',
                                implicitBegin=False)
        connection = ReconnectingConnection(config)
        raw = connection.ensure_connected()
        cursor = raw.cursor()
        cursor.execute('SELECT gid FROM pg_prepared_xacts')
        left = [row[0] for row in cursor.fetchall()]
        cursor.execute('SELECT karma FROM person WHERE id = 3')
        self.assertEqual(cursor.fetchone()[0], 777)
        raw.rollback()
        self.assertEqual(left, [alive])  # pid 1 lives: not ours to decide
        raw.tpc_rollback(alive)
        connection.close()
        setup.closeConnections()


class TestDeferredCommitPrepared(DatabaseTestCase):

    def test_the_next_begin_finishes_it(self):
        from canonical.launchpad.database import Person
        setup = LaunchpadTestSetup()
        gid = self.prepare_elsewhere(setup, 555)
        ztm = initZopeless(implicitBegin=False)
        ztm.begin()
        db = ztm.connection()
        ztm.abort()
        db.prepared.defer(gid, commit=True)
        self.assertTrue(db.prepared.has_pending)  # what begin() reads
        ztm.begin()  # same, healthy connection: no reconnect needed
        self.assertFalse(db.prepared.has_pending)
        self.assertEqual(Person.get(5).karma, 555)
        self.assertEqual(ztm.connection().execute(
            'SELECT count(*) FROM pg_prepared_xacts').fetchone(), (0,))
        ztm.abort()
        setup.closeConnections()


    def test_uninstall_finishes_it_too(self):
        setup = LaunchpadTestSetup()
        gid = self.prepare_elsewhere(setup, 556)
        ztm = initZopeless(implicitBegin=False)
        ztm.begin()
        db = ztm.connection()
        ztm.abort()
        db.prepared.defer(gid, commit=False)
        ztm.uninstall()
        cursor = setup.connect().cursor()
        cursor.execute('SELECT karma FROM person WHERE id = 5')
        self.assertNotEqual(cursor.fetchone()[0], 556)  # rolled back
        cursor.execute('SELECT count(*) FROM pg_prepared_xacts')
        self.assertEqual(cursor.fetchone()[0], 0)
        setup.closeConnections()


class TestLazyUpdate(DatabaseTestCase):

    def test_lazy_updates_are_written_at_commit(self):
        from sqlobject import IntCol, StringCol
        from canonical.database.sqlbase import SQLBase

        class LazyPerson(SQLBase):
            class sqlmeta:
                table = 'person'
                lazyUpdate = True
                registry = 'lazy-update-test'
            name = StringCol()
            karma = IntCol()

        ztm = initZopeless(implicitBegin=False)
        ztm.begin()
        LazyPerson.get(2).karma = 1
        unwritten = ztm.connection().execute(
            'SELECT karma FROM person WHERE id = 2').fetchone()[0]
        ztm.commit()
        self.assertEqual(unwritten, 235)  # nothing sent before commit
        ztm.begin()
        self.assertEqual(LazyPerson.get(2).karma, 1)
        ztm.abort()


class TestInsertRoundTrips(DatabaseTestCase):

    def test_creating_a_row_is_one_statement(self):
        from canonical.testing.logcapture import LogCapture
        from canonical.launchpad.database import Person
        ztm = initZopeless(implicitBegin=False, debug=True)
        ztm.begin()
        log = LogCapture('canonical.database.sql')
        self.addCleanup(log.uninstall)
        person = Person(name='one-trip', displayname='One')
        statements = log.lines()
        # The database's own defaults came back with the INSERT.
        self.assertIsNotNone(person.datecreated)
        self.assertEqual(person.karma, 0)
        ztm.abort()
        self.assertEqual(len(statements), 1, statements)
        self.assertIn('RETURNING', statements[0])


class TestConfigurationCopies(unittest.TestCase):
    """Derived configurations keep what they are not told to change."""

    def make(self, **settings):
        return DatabaseConfig(dbname='db', dbhost='h1 port=5433',
                              dbuser='u', password='secret',
                              environ={}, **settings)

    def test_replace_keeps_every_other_setting(self):
        config = self.make(reconnect_timeout=30, resolve_commit_outcome=True,
                           reconnect_max_delay=0.2)
        derived = config.replace(isolation='serializable', debug=True)
        self.assertEqual(derived.isolation, 'serializable')
        self.assertTrue(derived.debug)
        self.assertEqual(derived.reconnect_timeout, 30.0)
        self.assertTrue(derived.resolve_commit_outcome)
        self.assertEqual(derived.reconnect_max_delay, 0.2)
        self.assertEqual(derived.connect_kwargs(), config.connect_kwargs())
        self.assertEqual(config.isolation, 'read_committed')
        self.assertFalse(config.debug)

    def test_replace_validates(self):
        config = self.make()
        self.assertRaises(ConfigurationError, config.replace,
                          isolation='sloppy')
        self.assertRaises(ConfigurationError, config.replace,
                          reconnect_timeout=-1)
        self.assertRaises(ConfigurationError, config.replace, dbname='x')

    def test_settings_are_read_only(self):
        config = self.make()
        with self.assertRaises(AttributeError):
            config.isolation = 'serializable'
        self.assertEqual(config.isolation, 'read_committed')

    def test_database_key_ignores_behaviour_but_not_the_target(self):
        config = self.make()
        self.assertEqual(config.database_key(),
                         config.replace(isolation='serializable',
                                        implicitBegin=False).database_key())
        self.assertNotEqual(config.settings_key(),
                            config.replace(debug=True).settings_key())
        other = DatabaseConfig(dbname='other', dbhost='h1 port=5433',
                               dbuser='u', environ={})
        self.assertNotEqual(config.database_key(), other.database_key())
        self.assertNotIn('secret', repr(config.database_key()))

    def test_no_database_name_is_libpq_default(self):
        # No test fixture name leaks in: libpq picks PGDATABASE, then the
        # user name.
        config = DatabaseConfig(environ={})
        self.assertIsNone(config.get('dbname'))
        self.assertEqual(
            DatabaseConfig(environ={'LP_DBNAME': 'lp'}).get('dbname'), 'lp')

    def test_implementations_provide_their_interfaces(self):
        config = self.make()
        self.assertTrue(verifyObject(IDatabaseConfig, config))
        self.assertTrue(verifyObject(IReconnectCoordinator,
                                     reconnect.ReconnectCoordinator(config)))
        self.assertTrue(verifyObject(IPreparedTransactions,
                                     PreparedTransactions(config)))


class TestOnePerDatabase(DatabaseTestCase):
    """Outage coordination and two-phase bookkeeping are shared by every
    configuration of a database, whatever its isolation level."""

    def test_set_isolation_level_keeps_one_coordinator(self):
        ztm = initZopeless(implicitBegin=False)
        ztm.begin()
        first = ztm.connection()
        ztm.abort()
        ztm.set_isolation_level('serializable')
        seen = {}

        def other_thread():
            ztm.begin()
            seen['db'] = ztm.connection()
            seen['level'] = seen['db'].execute(
                'SHOW transaction_isolation').fetchone()[0]
            ztm.abort()

        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()
        self.assertEqual(seen['level'], 'serializable')
        self.assertIs(seen['db']._coordinator, first._coordinator)
        self.assertIs(seen['db'].prepared, first.prepared)
        self.assertIs(reconnect.coordinator_for(ztm.config),
                      first._coordinator)
        self.assertIs(prepared_for(ztm.config), first.prepared)


class TestTransactionPrivates(unittest.TestCase):
    """The one private attribute of `transaction` the library reads."""

    def test_joined_resources_are_still_in_txn_resources(self):
        # datamanager._is_alone() reads txn._resources to commit in one
        # phase when the database is alone; if `transaction` renames it,
        # every commit would silently become two-phase.
        from canonical.database.datamanager import _is_alone
        manager = transaction.TransactionManager(explicit=True)
        txn = manager.begin()
        try:
            self.assertIsInstance(txn._resources, list)
            txn.join(object())
            self.assertTrue(_is_alone(txn))
            txn.join(object())
            self.assertFalse(_is_alone(txn))
        finally:
            txn._resources[:] = []
            manager.abort()
