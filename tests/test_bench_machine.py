"""What bin/bench records of its machine (benchmarks/machine.py) and how
``--profile`` sorts cProfile's entries (benchmarks/profiling.py)."""

import json
import unittest

from benchmarks import machine
from benchmarks.profiling import group_of


class TestMachine(unittest.TestCase):

    def test_the_description_names_what_decides_loopback_figures(self):
        described = machine.describe()
        json.dumps(described)  # goes to results-meta.json as it is
        self.assertGreaterEqual(described['cpus'], 1)
        self.assertTrue(described['cpu_model'])
        python = described['python']
        self.assertEqual(sorted(python), [
            'build', 'compiler', 'executable', 'implementation', 'lto',
            'pgo', 'shared', 'version'])
        self.assertRegex(described['drivers']['psycopg2'], r'^2\.\d+')
        self.assertRegex(described['drivers']['libpq'], r'^\d+\.\d+$')
        line = machine.summary(described)
        self.assertIn(described['cpu_model'], line)
        self.assertIn('Python %s' % python['version'], line)

    def test_busy_and_stolen_shares_between_two_samples(self):
        before = {'loadavg': [1.0, 1.0, 1.0],
                  'ticks': [100, 0, 50, 800, 50, 0, 0, 0, 0, 0]}
        # 1000 ticks later: 300 user, 100 system, 500 idle, 0 iowait,
        # 100 stolen by the hypervisor.
        after = {'loadavg': [2.0, 1.5, 1.0],
                 'ticks': [400, 0, 150, 1300, 50, 0, 0, 100, 0, 0]}
        during = machine.between(before, after)
        self.assertEqual(during['loadavg_before'], [1.0, 1.0, 1.0])
        self.assertEqual(during['loadavg_after'], [2.0, 1.5, 1.0])
        self.assertEqual(during['busy_share'], 0.5)
        self.assertEqual(during['steal_share'], 0.1)
        self.assertIn('load 1.00 -> 2.00; machine busy 50%, stolen 10.0%',
                      machine.summary(machine.describe(), during))

    def test_a_sample_of_this_machine(self):
        now = machine.sample()
        self.assertEqual(len(now['loadavg']), 3)
        self.assertGreater(len(now['ticks']), 4)


class TestProfileGroups(unittest.TestCase):

    def test_entries_are_grouped_by_where_they_live(self):
        self.assertEqual(group_of(
            '/x/src/canonical/database/txcontrol.py', 'begin'), 'library')
        self.assertEqual(group_of(
            '/eggs/transaction-5.1.egg/transaction/_transaction.py',
            'commit'), 'transaction')
        self.assertEqual(group_of(
            '~', "<method 'execute' of 'psycopg2.extensions.cursor' "
            "objects>"), 'psycopg2')
        self.assertEqual(group_of('~', "<method 'poll' of 'select.poll' "
                                  "objects>"), 'psycopg2')
        self.assertIsNone(group_of('/usr/lib/python3.11/logging/__init__.py',
                                   'debug'))
