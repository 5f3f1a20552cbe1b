"""The fault kinds of the "ha" topology (``chaos.topologies.ha``).

Each fault takes the primary away, promotes the standby, and ends with the
old primary back as a standby of its successor (``follow``: pg_rewind), so
the next fault finds a standby again.  Synchronous or asynchronous
replication is a property of the fault: the primary's
``synchronous_standby_names`` is set before it (the cluster kit never lets
a standby inherit it).

* ``failover_sync``, ``failover_async``: ``pg_ctl stop -m immediate`` of
  the primary, then promotion.  The asynchronous one usually lets the
  standby fall behind first (its WAL receiver paused), so that the server
  really loses acknowledged transactions;
* ``switchover``: a fast stop (the primary sends its standby all its WAL
  first), then promotion;
* ``fence_in_place``: ``default_transaction_read_only`` on the primary,
  the standby catches up, then promotion;
* ``silent_partition``: the primary's namespace drops every packet; the
  standby is promoted; the partition heals while the old primary still
  takes writes, before it is demoted;
* ``standby_stop``, ``standby_replay_paused``, ``standby_silent``: the
  standby stops (fast or immediate), pauses its replay
  (``pg_wal_replay_pause()``) or vanishes from the network, for about a
  second (the silent one for PARTITION_SECONDS), then comes back; read
  units must leave it and read-your-writes hold throughout.

Before an old primary is rewound the injector reads what it holds (over
its unix socket, starting it behind a cut network if it was stopped) and
compares with its successor: after an asynchronous failover, units only it
held are what the server lost (``server_lost``); rows it took after its
successor was promoted are split-brain writes (``split_brain_writes``).
"""

from __future__ import annotations

import time
from typing import Any, Dict, Optional, Set

from chaos.base import DBNAME
from chaos.faults import Injector
from chaos.interfaces import ITopology
from canonical.testing.cluster.interfaces import IReplicationNode
from canonical.testing.cluster.interfaces import ReplicationError

__all__ = ['HAFaultInjector', 'PARTITION_SECONDS', 'label']

# How long a silent partition lasts at least: longer than the library's
# default keepalive (2 s idle, 2 probes 1 s apart) and tcp_user_timeout
# (3 s), so that its sessions with the old primary have been given up when
# the partition heals, as a partition that is noticed at all is.  (A
# session that outlived the partition and resumed in the middle of a unit
# begun before the failover is the fencing README "High availability"
# asks operators for.)
PARTITION_SECONDS = 5.0


def label(node: IReplicationNode) -> str:
    """host:port, as libpq reports the server of a connection."""
    return '%s:%s' % (node.host, node.port)


class HAFaultInjector(Injector):
    """See the module docstring; ``topology`` is a
    chaos.topologies.ha.HATopology."""

    FAILOVER_KINDS = ('failover_sync', 'failover_async', 'switchover',
                      'fence_in_place', 'silent_partition')
    # Faults of the standby alone, for read units (soak --readers): the
    # primary keeps its role and its writes (replication made
    # asynchronous first, so that commits do not wait for the standby).
    STANDBY_KINDS = ('standby_stop', 'standby_replay_paused',
                     'standby_silent')
    KINDS = FAILOVER_KINDS + STANDBY_KINDS

    def __init__(self, seed: Any, topology: ITopology,
                 kinds: Optional[tuple] = None, interval: float = 1.5,
                 warmup: float = 0.5, rounds: Optional[int] = None) -> None:
        super().__init__(seed, kinds, interval, warmup, rounds)
        self.topology = topology

    # -- helpers -------------------------------------------------------------

    def _synchronous(self, synchronous: bool) -> None:
        primary, standby = self.topology.primary, self.topology.standby
        names = [standby.name] if synchronous else []
        if primary.synchronous_names() != names:
            primary.set_synchronous(names)

    def _uids(self, node: IReplicationNode) -> Set[str]:
        conn = self.topology.connect_to(node, DBNAME)
        try:
            cur = conn.cursor()
            cur.execute('SELECT uid FROM chaos_transfer')
            return {row[0] for row in cur.fetchall()}
        finally:
            conn.close()

    def _held_by_stopped(self, node: IReplicationNode) -> Set[str]:
        """What a stopped old primary holds.  It is started behind a loud
        cut, so nobody but us reaches it while it runs read-write."""
        host = self.topology.host_of(node)
        host.cut(silent=False)
        try:
            node.start()
            try:
                return self._uids(node)
            finally:
                node.stop('fast')
        finally:
            host.restore()

    def _note_lost(self, held: Set[str], successor: IReplicationNode,
                   deadline: float) -> int:
        """Units the old primary held and its successor lacks; counted
        lost by the server if reported committed before ``deadline``."""
        lost = held - self._uids(successor)
        for uid in lost:
            self.server_lost[uid] = deadline
        return len(lost)

    def _promote(self, new: IReplicationNode) -> float:
        new.promote()
        self.topology.swap()
        return time.monotonic()

    def _rejoin(self, old: IReplicationNode, new: IReplicationNode) -> float:
        """The old primary follows its successor; seconds it took."""
        started = time.monotonic()
        place = label(old)
        old.follow(new)
        if label(old) != place:
            # The library's host list names the old place.
            raise ReplicationError('%r came back on %s, not %s'
                                   % (old, label(old), place))
        return time.monotonic() - started

    def _restore(self) -> None:
        for host in self.topology.hosts.values():
            if host.is_cut:
                host.restore()

    @staticmethod
    def _detail(gone: float, promoted: float, new: IReplicationNode,
                **more: Any) -> Dict[str, Any]:
        detail = {'gone_at': gone, 'promoted_after': round(
            promoted - gone, 3), 'new_primary': label(new)}
        detail.update(more)
        return detail

    # -- the faults ----------------------------------------------------------

    def _failover(self, synchronous: bool, a: float, b: float) -> dict:
        old, new = self.topology.primary, self.topology.standby
        self._synchronous(synchronous)
        lag = 0.0
        if not synchronous and b < 0.7:
            # The standby falls behind: what the primary acknowledges
            # meanwhile is what the failover loses.
            new.pause_streaming()
            lag = 0.2 + 0.6 * a
            time.sleep(lag)
        old.stop('immediate')
        gone = time.monotonic()
        promoted = self._promote(new)
        time.sleep(0.3 + 0.7 * a)  # the new primary alone takes writes
        held = self._held_by_stopped(old)
        lost = self._note_lost(held, new, gone) if not synchronous else 0
        rejoin = self._rejoin(old, new)
        return self._detail(gone, promoted, new, synchronous=synchronous,
                            lag=round(lag, 3), server_lost=lost,
                            rejoin_seconds=round(rejoin, 3))

    def _failover_sync(self, a: float, b: float) -> dict:
        return self._failover(True, a, b)

    def _failover_async(self, a: float, b: float) -> dict:
        return self._failover(False, a, b)

    def _switchover(self, a: float, b: float) -> dict:
        old, new = self.topology.primary, self.topology.standby
        self._synchronous(b < 0.5)
        old.stop('fast')
        gone = time.monotonic()
        promoted = self._promote(new)
        time.sleep(0.3 + 0.7 * a)
        rejoin = self._rejoin(old, new)
        return self._detail(gone, promoted, new, synchronous=b < 0.5,
                            rejoin_seconds=round(rejoin, 3))

    def _fence_in_place(self, a: float, b: float) -> dict:
        old, new = self.topology.primary, self.topology.standby
        # A fence does not stop transactions already under way: one may
        # still commit after the standby caught up.  Synchronous
        # replication keeps its acknowledgement waiting (for a standby
        # that is a primary now), so it is never acknowledged and lost.
        self._synchronous(True)
        old.fence()
        gone = time.monotonic()
        new.wait_replayed(old.wal_lsn())
        promoted = self._promote(new)
        time.sleep(0.3 + 0.7 * a)
        rejoin = self._rejoin(old, new)
        return self._detail(gone, promoted, new, synchronous=True,
                            rejoin_seconds=round(rejoin, 3))

    def _silent_partition(self, a: float, b: float) -> dict:
        old, new = self.topology.primary, self.topology.standby
        synchronous = b < 0.5
        self._synchronous(synchronous)
        host = self.topology.host_of(old)
        host.cut(silent=True)
        gone = time.monotonic()
        promoted = self._promote(new)
        before = self._uids(old)
        # Not cut short when the soak stops: healing early is what the
        # partition's length is there to avoid.
        time.sleep(PARTITION_SECONDS + a)
        host.restore()  # the old primary answers again, read-write
        time.sleep(1.0 + b)
        after = self._uids(old)
        self.split_brain_writes += len(after - before)
        lost = 0 if synchronous else self._note_lost(after, new, gone)
        rejoin = self._rejoin(old, new)
        return self._detail(gone, promoted, new, synchronous=synchronous,
                            healed_for=round(1.0 + b, 3), server_lost=lost,
                            written_after_promotion=len(after - before),
                            rejoin_seconds=round(rejoin, 3))

    # -- faults of the standby -----------------------------------------------

    def _standby_stop(self, a: float, b: float) -> dict:
        standby = self.topology.standby
        self._synchronous(False)
        mode = 'fast' if b < 0.5 else 'immediate'
        standby.stop(mode)
        time.sleep(0.5 + a)
        standby.start()
        standby.wait_streaming()
        return {'standby': label(standby), 'mode': mode}

    def _standby_replay_paused(self, a: float, b: float) -> dict:
        standby = self.topology.standby
        self._synchronous(False)
        conn = self.topology.connect_to(standby, DBNAME)
        try:
            conn.cursor().execute('SELECT pg_wal_replay_pause()')
            time.sleep(1.0 + a)
            conn.cursor().execute('SELECT pg_wal_replay_resume()')
        finally:
            conn.close()
        return {'standby': label(standby), 'paused_for': round(1.0 + a, 3)}

    def _standby_silent(self, a: float, b: float) -> dict:
        standby = self.topology.standby
        self._synchronous(False)
        host = self.topology.host_of(standby)
        conn = self.topology.connect_to(standby, DBNAME)
        try:
            cur = conn.cursor()
            cur.execute('SELECT now()')
            cut_at = cur.fetchone()[0]
            host.cut(silent=True)
            try:
                time.sleep(PARTITION_SECONDS + a)
            finally:
                host.restore()
            # Sessions from before the cut were given up by their clients
            # (keepalives, tcp_user_timeout) without the server hearing of
            # it: end them, as the server's own keepalives would, hours
            # later by default.
            cur.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM "
                "pg_stat_activity WHERE backend_type = 'client backend' "
                "AND backend_start < %s AND pid <> pg_backend_pid()",
                (cut_at,))
            ended = cur.fetchone()[0]
        finally:
            conn.close()
        return {'standby': label(standby), 'stale_sessions_ended': ended,
                'silent_for': round(PARTITION_SECONDS + a, 3)}
