"""Read units on real standbys: database policies, lag, read-your-writes,
and standbys that stop, fall silent or are promoted."""

import transaction
from zope.interface.verify import verifyObject

from canonical.database.interfaces import DEFAULT_FLAVOR
from canonical.database.interfaces import PRIMARY_FLAVOR
from canonical.database.interfaces import DatabaseUnavailableError
from canonical.database.interfaces import DisallowedStore
from canonical.database.interfaces import DisconnectionError
from canonical.database.interfaces import IDatabasePolicy
from canonical.database.interfaces import IStandbyMonitor
from canonical.database.interfaces import NoUsableStandbyError
from canonical.database.interfaces import ReadOnlyUnitError
from canonical.database.policy import DatabaseBlockedPolicy
from canonical.database.policy import PrimaryDatabasePolicy
from canonical.database.policy import StandbyDatabasePolicy
from canonical.database.policy import StandbyOnlyDatabasePolicy
from canonical.database.hosts import servers_for
from canonical.database.standbys import standbys_for
from canonical.launchpad.database import Person
from canonical.lp import initZopeless
from canonical.testing.failover import dbhost
from canonical.testing.servers import ServersTestCase
from canonical.testing.waiting import wait_for
from test_cooldown_standby import autocommit


def label(server):
    return '%s:%s' % (server.host, server.port)


class ReadReplicaTestCase(ServersTestCase):

    def install(self, *servers, **options):
        ztm = initZopeless(dbname='launchpad_ftest', dbuser='postgres',
                           dbhost=dbhost(*servers), implicitBegin=False,
                           **options)
        self.addCleanup(ztm.uninstall)
        return ztm

    def in_recovery(self, ztm):
        return ztm.connection().execute(
            'SELECT pg_is_in_recovery()').fetchone()[0]

    def reader(self, ztm):
        return ztm._state().reader[0]


class TestPolicies(ReadReplicaTestCase):

    def test_standby_units_read_there_and_refuse_writes(self):
        primary = self.servers.primary()
        standby = self.servers.standby(primary, 'n2')
        ztm = self.install(primary, standby, max_usable_lag=0.5)

        # Without a policy: the primary, as always.
        ztm.begin()
        self.assertFalse(self.in_recovery(ztm))
        Person.get(1).displayname = 'Written'
        ztm.commit()

        with StandbyDatabasePolicy() as policy:
            verifyObject(IDatabasePolicy, policy)
            ztm.begin()
            self.assertTrue(self.in_recovery(ztm))
            # Read your writes: the commit just made is there.
            self.assertEqual(Person.get(1).displayname, 'Written')
            self.assertEqual(self.reader(ztm).standby, label(standby))
            person = Person.get(1)
            with self.assertRaises(ReadOnlyUnitError) as caught:
                person.displayname = 'Never'
            self.assertIn('StandbyDatabasePolicy', str(caught.exception))
            self.assertEqual(caught.exception.pgcode, '25006')
            ztm.abort()
        monitor = standbys_for(ztm.config)
        verifyObject(IStandbyMonitor, monitor)
        self.assertEqual(monitor.hosts()[label(primary)]['role'], 'primary')

        # Out of the block: writes go to the primary again.
        ztm.begin()
        self.assertFalse(self.in_recovery(ztm))
        Person.get(1).displayname = 'Again'
        ztm.commit()
        with StandbyDatabasePolicy():
            ztm.begin()
            self.assertEqual(Person.get(1).displayname, 'Again')
            self.assertTrue(self.in_recovery(ztm))
            ztm.abort()

        # Launchpad's other policies.
        with StandbyOnlyDatabasePolicy() as only:
            self.assertRaises(DisallowedStore, only.flavor_for,
                              PRIMARY_FLAVOR)
            ztm.begin()
            self.assertTrue(self.in_recovery(ztm))
            ztm.abort()
            with PrimaryDatabasePolicy() as inner:
                self.assertEqual(inner.flavor_for(DEFAULT_FLAVOR),
                                 PRIMARY_FLAVOR)
                ztm.begin()
                self.assertFalse(self.in_recovery(ztm))
                ztm.abort()
        with DatabaseBlockedPolicy():
            self.assertRaises(DisallowedStore, ztm.begin)

    def test_lag_leaves_a_standby_and_does_not_grow_when_idle(self):
        primary = self.servers.primary()
        standby = self.servers.standby(primary, 'n2')
        ztm = self.install(primary, standby, max_usable_lag=0.5,
                           standby_catch_up_timeout=0.2)
        with StandbyDatabasePolicy():
            ztm.begin()
            self.assertTrue(self.in_recovery(ztm))
            ztm.abort()
        monitor = standbys_for(ztm.config)
        # Idle primary: the lag stays 0 however long nothing happens.
        first = monitor.samples
        wait_for(lambda: monitor.samples >= first + 8, 20, 'eight rounds')
        self.assertEqual(monitor.lag(label(standby)), 0.0)

        on_standby = autocommit(standby)
        self.addCleanup(on_standby.close)
        on_standby.cursor().execute('SELECT pg_wal_replay_pause()')
        self.addCleanup(on_standby.cursor().execute,
                        'SELECT pg_wal_replay_resume()')
        # Someone else writes: this process's floor does not move.
        other = autocommit(primary)
        self.addCleanup(other.close)
        other.cursor().execute("UPDATE person SET displayname = 'Other' "
                               "WHERE id = 2")
        wait_for(lambda: (monitor.lag(label(standby)) or 0) > 0.5, 20,
                 'the paused standby to lag past max_usable_lag')
        self.assertEqual(monitor.candidates(), [])
        reader = None
        with StandbyDatabasePolicy():
            ztm.begin()
            reader = self.reader(ztm)
            self.assertFalse(self.in_recovery(ztm))   # the fallback
            self.assertEqual(Person.get(2).displayname, 'Other')
            self.assertRaises(ReadOnlyUnitError, setattr, Person.get(2),
                              'displayname', 'x')
            ztm.abort()
        self.assertGreaterEqual(reader.on_primary, 1)
        with StandbyOnlyDatabasePolicy():
            self.assertRaises(NoUsableStandbyError, ztm.begin)
        # A larger limit for this unit: the lagging standby will do.
        with StandbyDatabasePolicy(max_usable_lag=3600):
            ztm.begin()
            self.assertTrue(self.in_recovery(ztm))
            self.assertNotEqual(Person.get(2).displayname, 'Other')
            ztm.abort()

        on_standby.cursor().execute('SELECT pg_wal_replay_resume()')
        wait_for(lambda: monitor.lag(label(standby)) == 0.0, 20,
                 'the standby to catch up')
        with StandbyDatabasePolicy():
            ztm.begin()
            self.assertTrue(self.in_recovery(ztm))
            self.assertEqual(Person.get(2).displayname, 'Other')
            ztm.abort()

    def test_read_your_writes_waits_or_goes_to_the_primary(self):
        primary = self.servers.primary()
        standby = self.servers.standby(primary, 'n2')
        ztm = self.install(primary, standby, standby_catch_up_timeout=0.3)
        with StandbyDatabasePolicy():
            ztm.begin()
            Person.get(3)
            ztm.abort()
        reader = self.reader(ztm)
        on_standby = autocommit(standby)
        self.addCleanup(on_standby.close)
        # Lagging, well within max_usable_lag (120 s): still usable for
        # reads, but not after this process's own commit.
        on_standby.cursor().execute('SELECT pg_wal_replay_pause()')
        self.addCleanup(on_standby.cursor().execute,
                        'SELECT pg_wal_replay_resume()')
        ztm.begin()
        Person.get(3).displayname = 'Mine'
        ztm.commit()
        waits = reader.catch_up_waits
        with StandbyDatabasePolicy():
            ztm.begin()
            self.assertEqual(Person.get(3).displayname, 'Mine')
            self.assertFalse(self.in_recovery(ztm))
            ztm.abort()
        self.assertGreater(reader.catch_up_waits, waits)
        with StandbyOnlyDatabasePolicy():
            self.assertRaises(NoUsableStandbyError, ztm.begin)

        on_standby.cursor().execute('SELECT pg_wal_replay_resume()')
        with StandbyDatabasePolicy():
            for attempt in transaction.manager.attempts(3):
                with attempt:
                    self.assertEqual(Person.get(3).displayname, 'Mine')
                    on = self.in_recovery(ztm)
            # Caught up within standby_catch_up_timeout: the standby.
            self.assertTrue(on)


class TestStandbyFailures(ReadReplicaTestCase):

    def test_a_standby_that_stops_mid_unit(self):
        primary = self.servers.primary()
        standby = self.servers.standby(primary, 'n2')
        ztm = self.install(primary, standby)
        runs = []
        with StandbyDatabasePolicy():
            for attempt in transaction.manager.attempts(3):
                with attempt:
                    runs.append(self.in_recovery(ztm))
                    if len(runs) == 1:
                        standby.stop('fast')
                        # As on a primary that died: the unit fails, and
                        # attempts() runs it again (on the primary now).
                        with self.assertRaises(DisconnectionError):
                            Person.get(1).name
                        raise DisconnectionError('the standby stopped')
                    self.assertEqual(Person.get(1).name, 'sabdfl')
        self.assertEqual(runs, [True, False])
        self.assertEqual(standbys_for(ztm.config).candidates(), [])

    def test_a_silent_standby_costs_its_timeout_once(self):
        host = self.servers.host()
        primary = self.servers.primary()
        standby = self.servers.standby(primary, 'n2', netns=host)
        ztm = self.install(primary, standby)
        with StandbyDatabasePolicy():
            ztm.begin()
            self.assertTrue(self.in_recovery(ztm))
            host.cut()
            self.assertRaises(DisconnectionError, Person.get, 1)
            ztm.abort()
            monitor = standbys_for(ztm.config)
            servers = servers_for(ztm.config)
            # Suspect, and skipped by the sampler (which no longer waits on
            # it either).
            wait_for(lambda: monitor.hosts()[label(standby)]['role'] ==
                     'suspect', 20, 'the silent standby to be suspect')
            self.assertIn(label(standby), servers.suspects())
            timeouts = dict(servers.timeouts)
            for i in range(5):
                ztm.begin()
                self.assertFalse(self.in_recovery(ztm))
                ztm.abort()
            # Left, as the writer leaves a silent primary: no unit tried it.
            self.assertEqual(servers.timeouts, timeouts)
            host.restore()
            wait_for(lambda: label(standby) in
                     standbys_for(ztm.config).candidates(), 30,
                     'the standby to be back')
            ztm.begin()
            self.assertTrue(self.in_recovery(ztm))
            ztm.abort()

    def test_primary_down_then_a_standby_promoted(self):
        primary = self.servers.primary()
        standby = self.servers.standby(primary, 'n2')
        ztm = self.install(primary, standby, reconnect_timeout=0.5)
        with StandbyOnlyDatabasePolicy():
            ztm.begin()
            self.assertEqual(Person.get(1).name, 'sabdfl')
            ztm.abort()
        primary.stop('fast')
        # Reads go on on the standby; writers wait, as before.
        with StandbyOnlyDatabasePolicy():
            for i in range(3):
                ztm.begin()
                self.assertTrue(self.in_recovery(ztm))
                self.assertEqual(Person.get(1).name, 'sabdfl')
                ztm.abort()
        self.assertRaises(DatabaseUnavailableError, ztm.begin)

        standby.promote()
        monitor = standbys_for(ztm.config)
        wait_for(lambda: monitor.hosts()[label(standby)]['role'] ==
                 'primary', 20, 'the promotion to be seen')
        with StandbyOnlyDatabasePolicy():
            self.assertRaises(NoUsableStandbyError, ztm.begin)
        with StandbyDatabasePolicy():
            ztm.begin()
            # The promoted server, as the primary now, still read-only.
            self.assertFalse(self.in_recovery(ztm))
            self.assertRaises(ReadOnlyUnitError, setattr, Person.get(1),
                              'displayname', 'x')
            ztm.abort()
        ztm.begin()
        Person.get(1).displayname = 'After'
        ztm.commit()
