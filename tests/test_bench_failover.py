"""bin/bench's failover section (benchmarks/failover*.py).

The section runs, short, on the test layer's servers with the library and
the raw psycopg2 floor (the anchors are benchmark-only packages): every
scenario gives a figure, the library's commits land on the new primary
within the times its own failover tests promise, and the herd's
connection attempts are counted.  A run of the section alone replaces only
its own entries of results.json.
"""

import json
import os
import shutil
import tempfile
import time
import unittest

import psycopg2
from zope.interface.verify import verifyObject

from benchmarks import failover
from benchmarks.env import ConnectCounter
from benchmarks.failover_kit import ServerPair, Writer, label
from benchmarks.failover_systems import make_failover_system
from benchmarks.interfaces import IFailoverClient, IFailoverSystem
from benchmarks.interfaces import IServerPair
from benchmarks.report import Results
from benchmarks.run import only_failover, parse_args
from benchmarks.workloads import in_thread
from canonical.testing.servers import ServersTestCase

def deadline(seconds=30.0):
    return time.monotonic() + seconds


TINY = dict(failover.QUICK, async_rounds=1, sync_rounds=1, silent_rounds=1,
            herd_rounds=1, herd_threads=4, cap=20.0, defaults_cap=1.0)


class TestFailoverSection(ServersTestCase):

    def test_every_scenario_gives_a_figure(self):
        counter = ConnectCounter()
        counter.install()
        self.addCleanup(counter.uninstall)
        said = []
        figures = failover.run_failover(
            TINY, ['zopeless', 'raw-psycopg2'], counter=counter,
            say=said.append, servers=self.servers)
        self.assertEqual(figures['fatal'], {})
        samples = figures['samples']
        self.assertEqual(sorted(samples), ['async', 'silent-first', 'sync'])
        for scenario, by_system in samples.items():
            self.assertEqual(sorted(by_system), ['raw-psycopg2', 'zopeless'])
            for name, values in by_system.items():
                self.assertEqual(len(values), 1, (scenario, name))
                self.assertIsNotNone(values[0], (scenario, name))
        # What the library's failover tests promise, here measured by the
        # benchmark: the first commit after a silent loss within 6 s.
        self.assertLess(samples['async']['zopeless'][0], 5.0)
        self.assertLess(samples['silent-first']['zopeless'][0], 6.0)
        herd = figures['herd']['zopeless'][0]
        self.assertEqual((herd['timed_out'], herd['writers_stopped']), (0, 0))
        self.assertLess(herd['all_done'], 10.0)
        # Each of the threads needed a connection to the new primary.
        self.assertGreaterEqual(herd['connect_calls'], herd['threads'])
        self.assertGreaterEqual(herd['library_attempts'], 1)
        self.assertIn('failover: herd of 4, zopeless, round 1/1', said)

        results = Results()
        failover.add_results(results, figures, TINY)
        entry = results.find('zopeless', 'failover',
                             'silent-loss-to-commit-listed-first')
        self.assertEqual(entry['unit'], 'ms')
        self.assertAlmostEqual(
            entry['median'], samples['silent-first']['zopeless'][0] * 1000,
            delta=0.1)
        self.assertIn('promote-to-commit-async', failover.summary(results))

    def test_the_contracts(self):
        pair = ServerPair(self.servers)
        verifyObject(IServerPair, pair)
        for name in ('zopeless', 'raw-psycopg2'):
            system = make_failover_system(name, pair.hosts())
            self.addCleanup(system.close)
            verifyObject(IFailoverSystem, system)
            self.assertEqual(in_thread(self.use_client, system, pair), name)

    def use_client(self, system, pair):
        client = system.client()
        verifyObject(IFailoverClient, client)
        self.assertEqual(client.write('contract-1'), label(pair.primary))
        # After a COMMIT lost with its server the unit is run again, as
        # the anchors run it again: recovering must not raise.
        self.assertTrue(issubclass(self.lost_commit(system),
                                   client.retry_errors))
        client.recover(self.lost_commit(system)())
        client.close()
        return system.name

    @staticmethod
    def lost_commit(system):
        from canonical.database.interfaces import CommitOutcomeUnknownError
        return (CommitOutcomeUnknownError if system.name == 'zopeless'
                else psycopg2.OperationalError)

    def test_a_writer_counts_failed_attempts_and_goes_on(self):
        pair = ServerPair(self.servers, netns=False)
        system = make_failover_system('raw-psycopg2', pair.hosts())
        writer = Writer(system)
        writer.start()
        self.addCleanup(writer.stop)
        old = label(pair.primary)
        self.assertTrue(writer.wait(lambda: writer.commits_on(old, 0),
                                    deadline()))
        pair.crash()
        self.assertTrue(writer.wait(lambda: writer.failed_attempts,
                                    deadline()))
        pair.promote()
        new = label(pair.primary)
        self.assertTrue(writer.wait(lambda: writer.commits_on(new, 0),
                                    deadline()))
        self.assertIsNone(writer.fatal)


class TestSectionResults(unittest.TestCase):

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix='zopeless-bench-')
        self.addCleanup(shutil.rmtree, self.tmp)

    def test_the_section_alone_replaces_only_its_entries(self):
        path = os.path.join(self.tmp, 'results.json')
        old = Results()
        old.add('zopeless', 'read-sql', 'throughput', 100.0, 'tx/s')
        old.add('zopeless', 'failover', 'promote-to-commit-async', 9.0, 'ms')
        old.save(path, meta={'settings': {'rounds': 7}})
        new = Results()
        new.add('zopeless', 'failover', 'promote-to-commit-async', 5.0, 'ms')
        new.save_section(path, 'failover', {'settings': {'cap': 1}})
        with open(path) as f:
            entries = json.load(f)
        self.assertEqual([(e['workload'], e['median']) for e in entries],
                         [('read-sql', 100.0), ('failover', 5.0)])
        with open(os.path.join(self.tmp, 'results-meta.json')) as f:
            self.assertEqual(json.load(f), {'settings': {'rounds': 7},
                                            'failover': {'settings':
                                                         {'cap': 1}}})

    def test_only_failover(self):
        def wanted_for(argv):
            only = set(filter(None, parse_args(argv).only.split(',')))
            return lambda w: not only or w in only
        self.assertTrue(only_failover(wanted_for(['--only', 'failover'])))
        self.assertFalse(only_failover(wanted_for(['--only',
                                                   'failover,herd'])))
        self.assertFalse(only_failover(wanted_for([])))
