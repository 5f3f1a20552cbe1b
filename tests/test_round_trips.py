"""Round trips per transaction, counted by the test proxy: two for a
healthy transaction (the first statement carries the BEGIN, then COMMIT),
three when it commits in two phases, none when it runs no statement."""

import os
import shutil
import tempfile

import transaction

from canonical.database.positions import positions_for
from canonical.testing.filedm import FileDataManager
from canonical.testing.tcpproxy import TCPProxy
from canonical.launchpad.database import Person
from canonical.lp import initZopeless
from test_units import DatabaseTestCase

READ = 'SELECT name FROM person WHERE id = %s'
WRITE = "INSERT INTO person (name, displayname) VALUES (%s, 'R')"


class RoundTripTestCase(DatabaseTestCase):

    def setUp(self):
        self.proxy = TCPProxy(os.environ['PGHOST'], os.environ['PGPORT'])
        self.addCleanup(self.proxy.close)
        self.ztm = self.install()

    def install(self, **options):
        ztm = initZopeless(dbhost='127.0.0.1 port=%d' % self.proxy.port,
                           implicitBegin=options.pop('implicitBegin', False),
                           **options)
        # Connected and warm: what follows is counted from a live link.
        ztm.begin()
        Person.get(1)
        ztm.abort()
        return ztm

    def count(self, unit, times=5):
        """Round trips per run of ``unit``, and the first words of one
        run's statements."""
        self.proxy.reset_counts()
        unit(0)
        statements = self.proxy.snapshot()['statements']
        self.proxy.reset_counts()
        for i in range(times):
            unit(i + 1)
        return self.proxy.round_trips / times, statements


class TestHealthyTransactions(RoundTripTestCase):

    def explicit(self, work):
        def unit(i):
            self.ztm.begin()
            work(i)
            self.ztm.commit()
        return unit

    def test_sql_read(self):
        self.assertEqual(self.count(self.explicit(
            lambda i: self.ztm.connection().execute(READ, (1,)))),
            (2, ['BEGIN', 'COMMIT']))

    def test_sql_write(self):
        self.assertEqual(self.count(self.explicit(
            lambda i: self.ztm.connection().execute(WRITE, ('w%d' % i,)))),
            (2, ['BEGIN', 'COMMIT']))

    def test_orm_read(self):
        self.assertEqual(self.count(self.explicit(
            lambda i: Person.get(1 + i % 3).name))[0], 2)

    def test_orm_write(self):
        self.assertEqual(self.count(self.explicit(
            lambda i: Person(name='o%d' % i, displayname='O')))[0], 2)

    def test_implicit_begin(self):
        self.ztm.uninstall()
        self.ztm = self.install(implicitBegin=True)

        def unit(i):
            Person.get(1 + i % 3).name
            self.ztm.commit()
        self.assertEqual(self.count(unit)[0], 2)

    def test_commit_position_for_read_your_writes(self):
        # Once a standby policy was used, COMMIT brings back the position
        # the transaction ended at, in its own message: still two.
        positions = positions_for(self.ztm.config)
        positions.tracking = True
        self.addCleanup(setattr, positions, 'tracking', False)
        self.assertEqual(self.count(self.explicit(
            lambda i: self.ztm.connection().execute(WRITE, ('p%d' % i,)))),
            (2, ['BEGIN', 'SELECT']))
        written = positions.floor
        self.assertGreater(written, 0)
        # A unit that only read reports none: the floor stays.
        self.assertEqual(self.count(self.explicit(
            lambda i: self.ztm.connection().execute(READ, (1,))))[0], 2)
        self.assertEqual(positions.floor, written)

    def test_rollback(self):
        def unit(i):
            self.ztm.begin()
            Person.get(1)
            self.ztm.abort()
        self.assertEqual(self.count(unit), (2, ['BEGIN', 'ROLLBACK']))

    def test_later_statements_one_round_trip_each(self):
        def unit(i):
            self.ztm.begin()
            Person.get(1)
            Person.get(2).karma = i  # a SELECT, then the UPDATE
            self.ztm.commit()
        self.assertEqual(self.count(unit),
                         (4, ['BEGIN', 'SELECT', 'UPDATE', 'COMMIT']))


class TestTwoPhase(RoundTripTestCase):

    def test_resolve_commit_outcome(self):
        self.ztm.uninstall()
        self.ztm = self.install(resolve_commit_outcome=True)

        def unit(i):
            self.ztm.begin()
            Person.get(1)
            self.ztm.commit()
        # The outcome marker travels with BEGIN and the first statement,
        # and the transaction commits in one phase: nothing extra.
        self.assertEqual(self.count(unit), (2, ['BEGIN', 'COMMIT']))

    def test_with_another_data_manager(self):
        workdir = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, workdir)

        def unit(i):
            self.ztm.begin()
            self.ztm.connection().execute(WRITE, ('t%d' % i,))
            transaction.get().join(FileDataManager(
                os.path.join(workdir, str(i)), 'x'))
            self.ztm.commit()
        self.assertEqual(self.count(unit),
                         (3, ['BEGIN', 'PREPARE', 'COMMIT']))


class TestNothingToSend(RoundTripTestCase):

    def test_a_transaction_without_statements_sends_nothing(self):
        def unit(i):
            self.ztm.begin()
            self.ztm.commit()
            self.ztm.begin()
            self.ztm.abort()
        self.assertEqual(self.count(unit), (0, []))

    def test_nor_in_two_phases(self):
        self.ztm.uninstall()
        self.ztm = self.install(resolve_commit_outcome=True)

        def unit(i):
            self.ztm.begin()
            self.ztm.commit()
        self.assertEqual(self.count(unit), (0, []))


class TestRawAccess(RoundTripTestCase):

    def test_reading_raw_sends_the_begin_alone(self):
        def unit(i):
            self.ztm.begin()
            self.ztm.connection().raw.cursor().execute(READ, (1,))
            self.ztm.commit()
        self.assertEqual(self.count(unit),
                         (3, ['BEGIN', 'SELECT', 'COMMIT']))

    def test_a_server_side_cursor(self):
        # BEGIN alone (so that a lost link is still replayed), the DECLARE,
        # one FETCH of all five rows and the empty one after, COMMIT.
        def unit(i):
            self.ztm.begin()
            cursor = self.ztm.connection().cursor('people')
            cursor.itersize = 10
            cursor.execute('SELECT id FROM person WHERE id <= 5')
            self.assertEqual(len(list(cursor)), 5)
            self.ztm.commit()
        self.assertEqual(self.count(unit),
                         (5, ['BEGIN', 'DECLARE', 'FETCH', 'FETCH',
                              'COMMIT']))
