"""The library under Patroni: each fault users meet, through both paths.

One Patroni cluster (PatroniLayer) serves every test; each test runs a
writer, inflicts one fault on the leader and checks that at most the unit
in flight failed and that every unit acknowledged is on the leader.  The
figures printed are the time from the fault to the first commit and to
Patroni's API showing a leader.
"""

import time

from zope.interface.verify import verifyObject

from canonical.testing.cluster.interfaces import IEtcd, IHAProxy
from canonical.testing.cluster.interfaces import IPatroniCluster
from canonical.testing.cluster.interfaces import IPatroniMember
from canonical.testing.cluster.interfaces import SyncStandbyMissing
from canonical.testing.patroni import PatroniTestCase, inflict
from canonical.testing.patroni import heal, wait_one_writer


class TestFaultsUnderPatroni(PatroniTestCase):

    def run_fault(self, fault, path, exact, commits_after=5):
        ztm = self.install_on(path, exact)
        writer = self.writer(ztm, attempts=200)
        writer.wait_for_commits(5, timeout=60)
        report = inflict(self.cluster, fault)
        writer.wait_for_commits(commits_after, timeout=120)
        self.assertNothingLost(writer, exact)
        print('\n  %s via %s: no commit for %.2f s, Patroni %.2f s, '
              '%d failed attempts' % (
                  fault, path, report.outage(writer),
                  report.patroni_seconds, len(writer.errors)), end=' ')
        return report

    def test_switchover_through_the_host_list(self):
        report = self.run_fault('switchover', 'hosts', exact=True)
        self.assertNotEqual(report.old, report.new)

    def test_switchover_through_haproxy(self):
        # The server behind HAProxy's one address changes: the new
        # leader's later timeline is taken, not refused.
        report = self.run_fault('switchover', 'haproxy', exact=False)
        self.assertNotEqual(report.old, report.new)

    def test_postmaster_killed_through_haproxy(self):
        self.run_fault('postmaster_kill', 'haproxy', exact=True)

    def test_restart_through_the_host_list(self):
        self.run_fault('restart', 'hosts', exact=False)

    def test_hung_leader_through_the_host_list(self):
        report = self.run_fault('hung_leader', 'hosts', exact=True)
        self.assertNotEqual(report.old, report.new)
        # Woken, it finds its key gone and gives the leader's role up (or
        # Patroni hands the key back to it): never two writable servers.
        writer, took = wait_one_writer(self.cluster, timeout=60)
        print('one writer (%s) %.2f s later' % (writer.name, took), end=' ')

    def test_silent_cut_through_haproxy(self):
        report = self.run_fault('silent_cut', 'haproxy', exact=True)
        self.assertNotEqual(report.old, report.new)

    def test_etcd_stopped_through_the_host_list(self):
        self.run_fault('etcd_stopped', 'hosts', exact=True)

    # The same faults through the other path (and the other setting of
    # resolve_commit_outcome where the first test had exact outcomes).

    def test_postmaster_killed_through_the_host_list(self):
        self.run_fault('postmaster_kill', 'hosts', exact=False)

    def test_restart_through_haproxy(self):
        self.run_fault('restart', 'haproxy', exact=True)

    def test_hung_leader_through_haproxy(self):
        report = self.run_fault('hung_leader', 'haproxy', exact=False)
        self.assertNotEqual(report.old, report.new)

    def test_silent_cut_through_the_host_list(self):
        report = self.run_fault('silent_cut', 'hosts', exact=False)
        self.assertNotEqual(report.old, report.new)

    def test_etcd_stopped_through_haproxy(self):
        self.run_fault('etcd_stopped', 'haproxy', exact=False)


class TestPatroniKit(PatroniTestCase):

    def test_contracts(self):
        cluster = self.cluster
        verifyObject(IPatroniCluster, cluster)
        verifyObject(IEtcd, cluster.etcd)
        verifyObject(IHAProxy, cluster.haproxy)
        for member in cluster.members:
            verifyObject(IPatroniMember, member)
        topology = cluster.topology()
        self.assertEqual(sorted(topology), ['m1', 'm2', 'm3'])
        self.assertEqual(
            sorted(m['role'] for m in topology.values()),
            ['leader', 'replica', 'sync_standby'])
        cpu, rss = cluster.usage()
        print('\n  Patroni cluster: started in %.1f s; %.1f CPU s so far, '
              '%d MB resident' % (cluster.started_in, cpu, rss // 1024),
              end=' ')

    def test_heal_starts_a_member_that_stopped(self):
        # What a failed test leaves, the next one must not inherit.
        replica = [m for m in self.cluster.members
                   if not m.is_leader()][0]
        replica.stop()
        self.assertFalse(replica.is_running())
        done = heal(self.cluster, timeout=20)
        self.assertEqual(done, ['started %s again' % replica.name])
        self.assertTrue(replica.is_running())
        self.assertEqual(heal(self.cluster, timeout=20), [])

    def test_a_cluster_without_sync_standby_is_told_at_once(self):
        # Replicas streaming and no synchronous standby named: waiting
        # longer cannot help, so heal() says so instead of waiting out
        # its timeout (the layer then makes the cluster anew).
        cluster = self.cluster
        cluster.patronictl('edit-config', '--force', '--set',
                           'synchronous_mode=false')
        try:
            self.wait_for_no_sync_standby()
            started = time.monotonic()
            with self.assertRaises(SyncStandbyMissing):
                cluster.wait_replicas(60, sync_grace=3)
            self.assertLess(time.monotonic() - started, 30)
        finally:
            cluster.patronictl('edit-config', '--force', '--set',
                               'synchronous_mode=true')
        self.assertEqual(heal(cluster, timeout=60), [])

    def wait_for_no_sync_standby(self, timeout=30):
        deadline = time.monotonic() + timeout
        while any(m.get('role') == 'sync_standby'
                  for m in self.cluster.topology().values()):
            self.assertLess(time.monotonic(), deadline,
                            'Patroni still names a synchronous standby')
            time.sleep(0.2)
