"""Failover under Patroni: a layer, the faults users meet, what each cost.

``PatroniLayer`` starts one ``PatroniCluster`` (etcd, three members,
HAProxy; synchronous_mode on, so that Patroni only promotes a member that
has every acknowledged commit) for all its tests.  ``FAULTS`` names each
fault as Patroni users meet it; ``inflict(cluster, name)`` performs one
and returns a ``FaultReport``: when the fault began, when Patroni's REST
API first showed a leader able to take writes again, and which member.
The report's ``outage(writer)`` says how long the writer went without a
commit from the fault on: the time to its first commit once the fault
bit.  The chaos soak and the benchmarks use the same.
"""

from __future__ import annotations

import os
import signal
import statistics
import time
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

from zope.testing.cleanup import cleanUp

from canonical.testing.cluster.interfaces import ClusterError
from canonical.testing.cluster.interfaces import IPatroniCluster
from canonical.testing.cluster.interfaces import IPatroniMember
from canonical.testing.cluster.interfaces import SyncStandbyMissing
from canonical.testing.cluster.patroni import PatroniCluster
from canonical.testing.failover import FailoverTestCase, rows
from canonical.testing.writer import UnitWriter
from canonical.database.interfaces import CommitOutcomeUnknownError
from canonical.database.interfaces import IZopelessTransactionManager

__all__ = ['PatroniLayer', 'PatroniTestCase', 'FAULTS', 'inflict',
           'FaultReport', 'summary', 'heal', 'wait_one_writer', 'takes_writes',
           'SYNC_GRACE']

# How long heal() lets every replica stream, caught up, with none named
# the synchronous standby before it stops waiting: ten of Patroni's loops
# here (loop_wait 2 s), where a healthy cluster needs one or two.
SYNC_GRACE = 20.0


class FaultReport(NamedTuple):
    fault: str
    began: float             # time.monotonic() when the fault began
    leader_at: float         # when Patroni's API showed a writable leader
    old: str                 # the leader before
    new: str                 # the leader after

    @property
    def patroni_seconds(self) -> float:
        return self.leader_at - self.began

    def outage(self, writer: UnitWriter) -> Optional[float]:
        """The longest time without a commit of ``writer`` from the fault
        on: what it cost the job (the commits the old leader still took
        before it went do not hide it)."""
        times = [self.began] + sorted(
            c.at for c in list(writer.committed) if c.at > self.began)
        if len(times) < 2:
            return None
        return max(b - a for a, b in zip(times, times[1:]))


def _wait(predicate: Callable[[], Any], timeout: float, what: str,
          seen: Callable[[], Any] = lambda: None) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError('Patroni: no %s within %s s (seen: %r)' % (
                what, timeout, seen()))
        time.sleep(0.05)


def _switchover(cluster, leader):
    try:
        cluster.switchover()
    except ClusterError:
        # Patroni refuses while a member is still catching up (seen just
        # after start-up and after another fault): once more when all
        # are streaming.
        cluster.wait_replicas(60)
        cluster.switchover()
    return cluster.wait_leader(other_than=leader)


def _kill_postmaster(cluster, leader):
    pid = leader.postmaster_pid()
    os.kill(pid, signal.SIGKILL)
    # Patroni starts it again where it was (crash recovery), keeping its
    # key: the leader is back when a new postmaster runs and it answers.
    _wait(lambda: leader.postmaster_pid() not in (None, pid), 60,
          'new postmaster')
    return cluster.wait_leader()


def _restart(cluster, leader):
    cluster.restart(leader)
    return cluster.wait_leader()


def _hang(cluster, leader):
    timeline = leader.status().get('timeline', 0)
    pids = cluster.hang(leader)
    try:
        new = cluster.wait_leader(other_than=leader,
                                  timeout=cluster.timings['ttl'] * 6)
        # Woken within a second of its successor's promotion, Patroni
        # 3.0.2 (etcd3) was once seen to take its key back (the successor
        # then demoted itself): resume once the successor's promotion is
        # over (its API shows the new timeline).
        _wait(lambda: new.status().get('timeline', 0) > timeline, 60,
              'promotion finished', cluster.topology)
    finally:
        cluster.resume(pids)
    # Woken, the old leader finds its key gone and demotes itself; how
    # long it then takes to rejoin (a rewind, crash recovery first) is
    # Patroni's business and the machine's load: heal() waits for it.
    return new


def takes_writes(member: IPatroniMember) -> bool:
    """Whether ``member``'s PostgreSQL runs as a writable primary now."""
    try:
        return member.psql("SELECT NOT pg_is_in_recovery() AND current_"
                           "setting('default_transaction_read_only') = "
                           "'off'") == 't'
    except ClusterError:
        return False    # not running, or not taking connections


def wait_one_writer(cluster: IPatroniCluster, timeout: float
                    ) -> Tuple[IPatroniMember, float]:
    """Wait until exactly one member takes writes and it is Patroni's
    leader (/primary): no split brain.  Returns it and the seconds it
    took.  (A hung leader, woken, usually demotes itself; Patroni 3.0.2
    was also seen to give it the leader key back, its successor then
    demoting itself: either way one writer.  Its REST API may not answer
    while Patroni stops and rewinds its PostgreSQL: what counts is that no
    client, HAProxy or the library, can write to a second server.)"""
    began = time.monotonic()

    def one_writer():
        writers = [m for m in cluster.members if takes_writes(m)]
        return writers[0] if len(writers) == 1 and \
            writers[0].is_leader() else None
    writer = _wait(one_writer, timeout, 'single writable leader',
                   cluster.topology)
    return writer, time.monotonic() - began


def _cut(cluster, leader):
    leader.netns.cut(silent=True)
    try:
        new = cluster.wait_leader(other_than=leader,
                                  timeout=cluster.timings['ttl'] * 6)
    finally:
        leader.netns.restore()
    return new


def _etcd(cluster, leader):
    cluster.etcd.stop()
    try:
        # Without its DCS the leader demotes itself to read-only once it
        # cannot renew its key (retry_timeout), so no two leaders write.
        _wait(lambda: not leader.is_leader(),
              cluster.timings['ttl'] * 6, 'demotion without etcd')
    finally:
        cluster.etcd.start()
    return cluster.wait_leader()


FAULTS: Dict[str, Callable] = {
    'switchover': _switchover,          # patronictl switchover
    'postmaster_kill': _kill_postmaster,  # kill -9 of the postmaster
    'restart': _restart,                # patronictl restart of the leader
    'hung_leader': _hang,               # SIGSTOP beyond ttl, then SIGCONT
    'silent_cut': _cut,                 # its namespace cut silently
    'etcd_stopped': _etcd,              # the DCS gone, then back
}


def inflict(cluster: IPatroniCluster, fault: str) -> FaultReport:
    """Perform ``fault`` on ``cluster``'s leader; see the docstring."""
    leader = cluster.wait_leader()
    began = time.monotonic()
    new = FAULTS[fault](cluster, leader)
    # wait_leader() returns as soon as the API shows it: that moment.
    return FaultReport(fault, began, time.monotonic(), leader.name,
                       new.name)


def heal(cluster: IPatroniCluster, timeout: float = 120) -> List[str]:
    """Bring ``cluster`` back to a leader with every replica streaming,
    as an operator would: a member that does not rejoin by itself within
    half of ``timeout`` (a failed rewind, say) is started again if its
    Patroni died, and otherwise made again from the leader (reinit).
    Returns what it had to do; ClusterError when that was not enough,
    SyncStandbyMissing at once when no member can help (see there)."""
    try:
        cluster.wait_replicas(timeout / 2, sync_grace=SYNC_GRACE)
        return []
    except SyncStandbyMissing:
        raise
    except ClusterError:
        pass
    leader = cluster.wait_leader(timeout=timeout / 2)
    topology = cluster.topology()
    done = []
    for member in cluster.members:
        state = topology.get(member.name, {}).get('state')
        if member is leader or state in ('running', 'streaming'):
            continue
        if not member.is_running():
            member.start()
            done.append('started %s again' % member.name)
        else:
            cluster.reinit(member)
            done.append('reinit of %s (was %s)' % (member.name, state))
    cluster.wait_replicas(timeout)
    return done


def summary(values: List[float]) -> str:
    if not values:
        return 'none'
    return 'median %.2f s, max %.2f s' % (statistics.median(values),
                                          max(values))


class PatroniLayer:
    """One Patroni cluster for every test of the layer."""

    cluster: Optional[PatroniCluster] = None

    @classmethod
    def setUp(cls) -> None:
        cls.cluster = PatroniCluster(synchronous=True).start()

    @classmethod
    def tearDown(cls) -> None:
        if cls.cluster is not None:
            cls.cluster.destroy()
        cls.cluster = None

    @classmethod
    def heal(cls) -> None:
        """The cluster as the next test expects it (see heal()); made
        anew when it cannot be healed, so that one test's trouble does
        not become every later test's."""
        try:
            done = heal(cls.cluster)
        except (ClusterError, AssertionError) as e:
            print('\n  Patroni cluster made anew: %s' % e, end=' ')
            cls.cluster.destroy()
            cls.cluster = PatroniCluster(synchronous=True).start()
        else:
            if done:
                print('\n  Patroni cluster healed: %s' % '; '.join(done),
                      end=' ')

    @classmethod
    def testSetUp(cls) -> None:
        pass

    @classmethod
    def testTearDown(cls) -> None:
        cleanUp()


class PatroniTestCase(FailoverTestCase):
    """A failover test on PatroniLayer's cluster, through either path:
    ``install_on('hosts')`` lists every member in dbhost,
    ``install_on('haproxy')`` names HAProxy's one address."""

    layer = PatroniLayer

    def setUp(self) -> None:
        super().setUp()
        self.cluster = PatroniLayer.cluster
        # Runs last: the next test starts from a healthy cluster.
        self.addCleanup(PatroniLayer.heal)

    def install_on(self, path: str, exact: bool = True
                   ) -> IZopelessTransactionManager:
        servers = (self.cluster.members if path == 'hosts'
                   else [self.cluster.haproxy])
        return self.install(*servers, resolve_commit_outcome=exact)

    def assertNothingLost(self, writer: UnitWriter, exact: bool,
                          in_flight: int = 1) -> None:
        """Every acknowledged unit is on the leader, once; at most
        ``in_flight`` units failed, and with exact outcomes only as
        unknown (never reported failed when they committed)."""
        writer.stop()
        leader = self.cluster.wait_leader()
        found = rows(leader, 'SELECT uid FROM ha_unit')
        self.assertEqual(len(found), len(set(found)))
        missing = [c.uid for c in writer.committed if c.uid not in found]
        self.assertEqual(missing, [])
        self.assertLessEqual(len(writer.failed), in_flight, writer.failed)
        if exact:
            for error in writer.failed:
                self.assertIsInstance(error, CommitOutcomeUnknownError)
