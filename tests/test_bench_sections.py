"""bin/bench's sections register themselves (benchmarks/registry.py): the
run, the ``--only`` help and the targets find every module of
benchmarks/sections/ without a central list."""

import unittest

from zope.interface.verify import verifyObject

from benchmarks import registry
from benchmarks.cli import parse_args
from benchmarks.interfaces import IBenchRun
from benchmarks.interfaces import IBenchSection
from benchmarks.output import check_targets
from benchmarks.report import Results
from benchmarks.run import Run


class TestSectionRegistry(unittest.TestCase):

    def test_every_section_module_registers_one_section(self):
        names = [s.name for s in registry.sections()]
        self.assertEqual(names, ['throughput', 'lan', 'roundtrips',
                                 'recovery', 'herd', 'memory', 'failover',
                                 'patroni', 'replicas'])
        for section in registry.sections():
            verifyObject(IBenchSection, section)

    def test_a_new_section_joins_the_help_and_the_targets(self):
        class Replicas(registry.Section):
            name = 'replicas-test'
            order = 80
            needs_cluster = False

            def targets(self, results):
                return ['  met    replicas']
        registry.register(Replicas())
        self.addCleanup(registry._SECTIONS.pop, 'replicas-test')
        self.assertIn('replicas-test', registry.only_help())
        self.assertIn(', replicas-test', registry.only_help())
        self.assertTrue(registry.without_cluster(
            lambda key: key in ('failover', 'replicas-test')))
        self.assertFalse(registry.without_cluster(
            lambda key: key in ('herd', 'replicas-test')))
        self.assertEqual(
            check_targets(Results(), registry.sections()).splitlines(),
            ['Targets:', '  met    replicas'])

    def test_two_sections_of_one_name_are_refused(self):
        with self.assertRaises(ValueError) as caught:
            registry.register(registry.sections()[0].__class__())
        self.assertIn('rename one', str(caught.exception))

    def test_the_only_help_lists_the_sections_in_order(self):
        self.assertEqual(
            registry.only_help(),
            'read-sql, read-orm, write-sql, write-orm, lan (the four '
            'through a proxy adding 0.25 ms each way), roundtrips, '
            'recovery, herd, memory, failover (on a primary and a standby '
            'of its own), patroni (on a Patroni cluster of its own; only '
            'when named), replicas (read units on 0, 1, 2 standbys of its '
            'own)')
        self.assertEqual(parse_args(['--only', 'herd']).only, 'herd')

    def test_a_run_gives_the_sections_what_they_use(self):
        args = parse_args(['--quick', '--only', 'failover'])
        run = Run(args, {'rounds': 1}, lambda key: key == 'failover',
                  ['zopeless'], {}, None, print)
        verifyObject(IBenchRun, run)
        wanted = [s.name for s in run.sections if s.is_wanted(run)]
        self.assertEqual(wanted, ['failover'])
        self.assertEqual(sum(s.steps(run) for s in run.sections), 1)

    def test_the_patroni_section_runs_only_when_named(self):
        # It needs root, Patroni, etcd and HAProxy, and minutes.
        def wanted(argv):
            args = parse_args(argv)
            only = set(filter(None, args.only.split(',')))
            run = Run(args, {'rounds': 1},
                      lambda key: not only or key in only, ['zopeless'],
                      {}, None, print)
            return [s.name for s in run.sections if s.is_wanted(run)]
        self.assertNotIn('patroni', wanted([]))
        self.assertIn('failover', wanted([]))
        self.assertEqual(wanted(['--only', 'patroni']), ['patroni'])
        self.assertEqual(wanted(['--only', 'failover,patroni']),
                         ['failover', 'patroni'])
        self.assertTrue(registry.without_cluster(
            lambda key: key == 'patroni'))
