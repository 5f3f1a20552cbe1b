"""bin/bench's ``psycopg2+transaction`` system (benchmarks/floor.py): the
library's SQL with nothing of the library around it, whose throughput is
the ceiling of the ``>= 1.00x raw psycopg2`` target."""

import unittest

import psycopg2.extensions
from transaction.interfaces import IDataManager
from zope.interface.verify import verifyObject

from benchmarks.floor import FLOOR_SYSTEM, TransactionFloorSystem
from benchmarks.report import Results
from benchmarks.sections.memory import measured
from benchmarks.sections.throughput import Throughput
from benchmarks.systems import WORKLOAD_SYSTEMS
from canonical.launchpad.ftests.harness import LaunchpadTestSetup
from canonical.testing.layers import LaunchpadLayer

_IDLE = psycopg2.extensions.TRANSACTION_STATUS_IDLE


class TestTransactionFloor(unittest.TestCase):

    layer = LaunchpadLayer

    def setUp(self):
        self.setup = LaunchpadTestSetup()
        self.check = self.setup.connect()
        info = self.check.info
        self.system = TransactionFloorSystem(info.host, info.port,
                                             info.dbname, info.user)
        self.client = self.system.client()

    def tearDown(self):
        self.client.close()
        self.setup.closeConnections()

    def test_its_data_manager_commits_the_write(self):
        verifyObject(IDataManager, self.client.dm)
        self.client.write_sql('floor-write')
        # COMMIT went out in the vote: the row is there for others, and
        # the connection is left idle, as the library leaves its own.
        self.assertEqual(self.client.conn.get_transaction_status(), _IDLE)
        cursor = self.check.cursor()
        cursor.execute("SELECT count(*) FROM person WHERE name = %s",
                       ('floor-write',))
        self.assertEqual(cursor.fetchone()[0], 1)

    def test_it_reads_in_a_transaction_of_its_own_manager(self):
        row = self.client.read_sql(1)
        self.assertEqual(row[0], 1)
        self.assertEqual(self.client.conn.get_transaction_status(), _IDLE)
        self.assertIsNone(self.client.tm._txn)  # ended, not left open

    def test_it_runs_the_sql_workloads_and_says_what_they_allow(self):
        self.assertIn(FLOOR_SYSTEM, WORKLOAD_SYSTEMS['read-sql'])
        self.assertIn(FLOOR_SYSTEM, WORKLOAD_SYSTEMS['write-sql'])
        self.assertNotIn(FLOOR_SYSTEM, WORKLOAD_SYSTEMS['read-orm'])
        results = Results()
        for name, rate in (('raw-psycopg2', 1000.0), ('zopeless', 900.0),
                           (FLOOR_SYSTEM, 950.0)):
            results.add(name, 'read-sql', 'throughput', rate, 'tx/s',
                        floor='raw-psycopg2')
        results.compute_ratios()
        line, = Throughput().targets(results)
        self.assertIn('zopeless at 90% of raw psycopg2', line)
        self.assertIn('psycopg2+transaction, the ceiling: 95%', line)

    def test_it_keeps_out_of_the_memory_section(self):
        # It has no models: the memory child would find no load_many().
        class Run:
            available = ('raw-psycopg2', 'zopeless', FLOOR_SYSTEM)
        self.assertFalse(hasattr(self.client, 'load_many'))
        self.assertEqual(measured(Run()), ['raw-psycopg2', 'zopeless'])
