"""Database policies without standbys: the stack of policies, WAL
positions, and a database of one server, where read units run on the
primary, read-only, as Launchpad's policies do on an unreplicated
database."""

import os
import shutil
import tempfile
import unittest

import transaction
from zope.interface.verify import verifyObject

from canonical.database.config import DatabaseConfig
from canonical.database.interfaces import DEFAULT_FLAVOR
from canonical.database.interfaces import PRIMARY_FLAVOR
from canonical.database.interfaces import STANDBY_FLAVOR
from canonical.database.interfaces import DisallowedStore
from canonical.database.interfaces import IDatabaseConfig
from canonical.database.interfaces import IDatabasePolicy
from canonical.database.interfaces import ReadOnlyUnitError
from canonical.database.policy import DatabaseBlockedPolicy
from canonical.database.policy import PrimaryDatabasePolicy
from canonical.database.policy import StandbyDatabasePolicy
from canonical.database.policy import StandbyOnlyDatabasePolicy
from canonical.database.policy import current_policy
from canonical.database.positions import commit_floor
from canonical.database.positions import parse_lsn
from canonical.database.readers import ReaderConfig
from canonical.launchpad.database import Person
from canonical.testing.filedm import FileDataManager
from canonical.lp import initZopeless
from test_script_units import Script
from test_script_units import TempDirMixin
from test_units import DatabaseTestCase


class TestPolicyStack(unittest.TestCase):

    def test_nesting_and_flavors(self):
        self.assertIsNone(current_policy())
        with StandbyDatabasePolicy() as outer:
            verifyObject(IDatabasePolicy, outer)
            self.assertIs(current_policy(), outer)
            self.assertEqual(outer.flavor_for(), STANDBY_FLAVOR)
            # Asking for the primary by name is allowed here ...
            self.assertEqual(outer.flavor_for(PRIMARY_FLAVOR),
                             PRIMARY_FLAVOR)
            with PrimaryDatabasePolicy() as inner:
                self.assertIs(current_policy(), inner)
                self.assertEqual(inner.flavor_for(DEFAULT_FLAVOR),
                                 PRIMARY_FLAVOR)
            self.assertIs(current_policy(), outer)
        self.assertIsNone(current_policy())
        # ... not under the standby-only and blocked policies.
        only = StandbyOnlyDatabasePolicy()
        self.assertRaises(DisallowedStore, only.flavor_for, PRIMARY_FLAVOR)
        self.assertFalse(only.allows_primary_fallback())
        self.assertRaises(DisallowedStore,
                          DatabaseBlockedPolicy().flavor_for)

    def test_uninstalling_out_of_order_is_refused(self):
        outer, inner = StandbyDatabasePolicy(), PrimaryDatabasePolicy()
        outer.install()
        inner.install()
        self.assertRaises(AssertionError, outer.uninstall)
        inner.uninstall()
        outer.uninstall()
        self.assertIsNone(current_policy())


class TestPositions(unittest.TestCase):

    def test_parse_lsn(self):
        self.assertEqual(parse_lsn('16/B374D848'), 0x16B374D848)
        self.assertEqual(parse_lsn(None), 0)

    def test_a_position_past_a_page_header_is_the_boundary(self):
        # What a standby reports having replayed when the commit's record
        # ended exactly at a page boundary.
        self.assertEqual(commit_floor('0/3002018'), 0x3002000)   # short
        self.assertEqual(commit_floor('0/4000028'), 0x4000000)   # long
        self.assertEqual(commit_floor('0/3002060'), 0x3002060)


class TestReaderConfig(unittest.TestCase):

    def test_read_only_sessions_of_the_same_database(self):
        config = DatabaseConfig(dbname='x', dbhost='h1,h2 port=1,2',
                                libpq_options={'options': '-c work_mem=8MB'})
        reader = ReaderConfig(config)
        verifyObject(IDatabaseConfig, reader)
        kwargs = reader.connect_kwargs()
        self.assertEqual(kwargs['options'], '-c work_mem=8MB '
                         '-c default_transaction_read_only=on')
        self.assertEqual(kwargs['target_session_attrs'], 'any')
        self.assertFalse(reader.writes)
        # Shared with the writer: one host list, one coordinator.
        self.assertEqual(reader.database_key(), config.database_key())
        # The fallback to the primary connects (and is checked) as the
        # writer does; the session is made read-only afterwards.
        fallback = ReaderConfig(reader, 'primary')
        self.assertEqual(fallback.connect_kwargs(), config.connect_kwargs())
        self.assertTrue(fallback.writes)


class TestOneServer(DatabaseTestCase):

    def test_read_units_run_read_only_on_the_primary(self):
        ztm = initZopeless(implicitBegin=False)
        with StandbyDatabasePolicy():
            ztm.begin()
            self.assertEqual(Person.get(1).name, 'sabdfl')
            self.assertRaises(ReadOnlyUnitError, Person,
                              name='nobody', displayname='N')
            ztm.abort()
        self.assertEqual(ztm._state().reader[0].on_primary, 1)
        with DatabaseBlockedPolicy():
            self.assertRaises(DisallowedStore, ztm.begin)
        ztm.begin()
        Person(name='somebody', displayname='S')
        ztm.commit()


    def test_a_read_unit_commits_in_one_phase_whoever_joined(self):
        # Nothing to lose: no PREPARE TRANSACTION (which a standby refuses)
        # even with another data manager and resolve_commit_outcome.
        ztm = initZopeless(implicitBegin=False, resolve_commit_outcome=True)
        tmp = tempfile.mkdtemp(prefix='zopeless-policy-')
        self.addCleanup(shutil.rmtree, tmp, True)
        prepared = []
        with StandbyDatabasePolicy():
            ztm.begin()
            reader = ztm.connection()
            prepare = reader.prepare
            reader.prepare = lambda gid: prepared.append(gid) or prepare(gid)
            Person.get(1)
            transaction.get().join(FileDataManager(
                os.path.join(tmp, 'f'), 'x'))
            ztm.commit()
        self.assertEqual(prepared, [])
        self.assertTrue(os.path.exists(os.path.join(tmp, 'f')))


class TestScriptOption(TempDirMixin, DatabaseTestCase):

    def run_script(self, args, cls=Script):
        seen = []

        def work(script):
            seen.append(current_policy())
            seen.append(Person.get(1).name)
            transaction.abort()
        status = cls('policy', test_args=args, work=work).run_with_status()
        self.assertEqual(status, 0)
        return seen

    def test_db_policy_option(self):
        policy, name = self.run_script(['--db-policy', 'standby'])
        self.assertIsInstance(policy, StandbyDatabasePolicy)
        self.assertEqual(name, 'sabdfl')
        self.assertEqual(self.run_script([])[0], None)

    def test_a_script_made_read_only_in_one_line(self):
        class Report(Script):
            database_policy = 'standby-only'
        seen = []

        def work(script):
            seen.append(current_policy())
            Person.get(1)
        script = Report('report', test_args=[], work=work)
        # One server, no standby: the job refuses to load the primary.
        self.assertEqual(script.run_with_status(), 1)
        self.assertIsInstance(seen[0], StandbyOnlyDatabasePolicy)
        self.assertIn('No standby of', script.output())
