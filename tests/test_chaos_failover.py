"""Short chaos soaks of the other topologies: a primary and a standby in
network namespaces of their own, failed over every way (about 25 s), and
a primary behind PgBouncer (about 12 s).  Each lasts until every kind of
fault came up; the long ones are ``bin/chaos --topology ha`` and
``bin/chaos --topology bouncer``.
"""

import os
import shutil
import tempfile
import unittest

from zope.interface.verify import verifyObject
from zope.testing.cleanup import cleanUp

from chaos.hafaults import HAFaultInjector
from chaos.interfaces import IFaultInjector, ITopology
from chaos.report import table
from chaos.soak import run_soak
from chaos.topology import TOPOLOGY_KINDS, make_topology, topology_for


class SoakTestCase(unittest.TestCase):

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix='zopeless-chaos-')

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)
        cleanUp()

    def soak(self, topology, kinds=None, **kw):
        kinds = TOPOLOGY_KINDS[topology] if kinds is None else kinds
        report = run_soak(topology=topology, kinds=kinds,
                          workers=6, seed=20250102, rounds=1,
                          base=os.path.join(self.tmp, topology),
                          json_path=os.path.join(self.tmp, 'report.json'),
                          **kw)
        summary = table(report)
        self.assertTrue(report['passed'], summary)
        # Every kind came up, and the soak went on after each.
        self.assertEqual(sorted(k for k, n in
                                report['faults_by_kind'].items() if n),
                         sorted(kinds), summary)
        self.assertEqual(report['fault_errors'], 0, summary)
        units = report['units']
        self.assertGreater(units['committed'], 50, summary)
        for key in ('lost', 'duplicated', 'failed_present', 'failed_final',
                    'ambiguous', 'strangers', 'journal_mismatch'):
            self.assertEqual(units[key], 0, '%s\n%s' % (key, summary))
        self.assertEqual(report['library_wrong'], 0, summary)
        # The workers wrote commit outcome markers: across a failover only
        # they tell whether the new primary has a transaction.
        self.assertIs(report['commit_outcomes']['table_available'], True,
                      summary)
        self.assertTrue(report['invariant']['holds'], summary)
        for phase in ('leaks', 'final_leaks'):
            self.assertEqual(report[phase]['leaked_backends'], 0, summary)
            self.assertEqual(report[phase]['prepared'], 0, summary)
        self.assertEqual(report['anomalies']['unexpected_errors'], {},
                         summary)
        self.assertFalse(os.path.exists(report['cluster']))
        return report, summary


class HASoakTest(SoakTestCase):

    def test_failovers_lose_nothing_the_library_reported(self):
        report, summary = self.soak('ha', duration=5, interval=0.5,
                                    readers=1)
        self.assertEqual(report['split_brain_writes'], 0, summary)
        # Read units ran beside the writers, and none missed a commit the
        # workers had reported before it began.
        reads = report['reads']
        self.assertGreater(reads['reads'], 0, summary)
        self.assertGreater(reads['uids_checked'], 0, summary)
        self.assertEqual(reads['violations'], 0, summary)
        self.assertIn('read units:', summary)
        # Under asynchronous replication the server may lose acknowledged
        # units; they are counted apart (a number, possibly 0), and only
        # units the old primary held and its successor lacked count so.
        server_lost = report['units']['lost_by_server']
        self.assertIsInstance(server_lost, int)
        self.assertLessEqual(server_lost,
                             report['units']['held_by_old_primaries_only'])
        by_kind = {f['kind']: f['detail'] for f in report['faults']}
        self.assertTrue(by_kind['failover_sync']['synchronous'])
        self.assertFalse(by_kind['failover_async']['synchronous'])
        # Writes resumed on each new primary, the silent one within 6 s.
        failovers = report['failover_seconds']
        self.assertEqual(sorted(failovers),
                         sorted(HAFaultInjector.FAILOVER_KINDS), summary)
        self.assertLess(failovers['silent_partition']['max'], 6.0, summary)
        self.assertEqual(report['password_leaks'], 0)


class PatroniSoakTest(SoakTestCase):

    def test_patroni_failovers_lose_nothing(self):
        # Two of Patroni's faults, the cheapest (the layer of
        # test_patroni takes them all); the long soak is
        # bin/chaos --topology patroni --duration 120.
        kinds = ('patroni_switchover', 'patroni_postmaster_kill')
        report, summary = self.soak('patroni', kinds, duration=2,
                                    interval=0.5)
        self.assertEqual(report['split_brain_writes'], 0, summary)
        for fault in report['faults']:
            # Patroni's own view beside the library's.
            self.assertGreater(fault['detail']['patroni_after'], 0, summary)


class BouncerSoakTest(SoakTestCase):

    def test_pgbouncer_events_lose_nothing(self):
        report, summary = self.soak('bouncer', duration=4, interval=0.6)
        failed = report['failed_attempts_by_kind']
        self.assertEqual(failed['none'], 0, summary)
        self.assertEqual(report['split_brain_writes'], 0)


class TopologyTest(unittest.TestCase):

    def test_the_topology_follows_the_kinds(self):
        self.assertEqual(topology_for(()), 'single')
        self.assertEqual(topology_for(('proxy_cut',)), 'single')
        self.assertEqual(topology_for(('switchover', 'failover_async')),
                         'ha')
        self.assertEqual(topology_for(('pgbouncer_pause',)), 'bouncer')
        with self.assertRaises(ValueError):
            topology_for(('proxy_cut', 'switchover'))
        with self.assertRaises(ValueError):
            topology_for(('no_such_kind',))

    def test_the_topologies_register_themselves(self):
        self.assertEqual(list(TOPOLOGY_KINDS),
                         ['single', 'ha', 'bouncer', 'patroni'])
        self.assertEqual(TOPOLOGY_KINDS['bouncer'],
                         ('pgbouncer_pause', 'pgbouncer_restart',
                          'restart_behind_pgbouncer'))
        with self.assertRaises(ValueError) as caught:
            make_topology('no-such', '/x')
        self.assertIn('single, ha, bouncer or patroni', str(caught.exception))

        from chaos import topology

        class Patroni:
            def __init__(self, base):
                self.base = base
        topology.register('patroni-test', ('patroni_kill',), Patroni)
        self.addCleanup(topology._REGISTRY.pop, 'patroni-test')
        self.assertEqual(topology_for(('patroni_kill',)), 'patroni-test')
        self.assertEqual(make_topology('patroni-test', '/x').base, '/x')
        with self.assertRaises(ValueError):
            topology.register('ha', (), Patroni)

    def test_topologies_and_injectors_keep_their_interfaces(self):
        from chaos.topologies.bouncer import BouncerFaultInjector
        from chaos.faults import FaultInjector
        from chaos.topologies.patroni import PatroniFaultInjector
        for name in TOPOLOGY_KINDS:
            topology = make_topology(name, '/nonexistent')
            self.assertTrue(verifyObject(ITopology, topology))
        for injector in (HAFaultInjector(1, make_topology('ha', '/x')),
                         BouncerFaultInjector(1, make_topology('bouncer',
                                                               '/x')),
                         PatroniFaultInjector(1, make_topology('patroni',
                                                               '/x')),
                         FaultInjector(1, None, None, None, 'chaos')):
            self.assertTrue(verifyObject(IFaultInjector, injector))
