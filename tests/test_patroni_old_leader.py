"""An old leader that still takes writes, met again after a failover.

Patroni's leader demotes itself when it loses its key; a leader whose
Patroni died (killed, OOM, a host agent's upgrade) does not: its
PostgreSQL runs on as a writable primary on the old timeline while
Patroni promotes another member.  Here the leader's Patroni is killed and
the leader cut off; Patroni promotes its synchronous standby; the
library's writer follows it.  Then the old server comes back, taking
writes, and the library meets it again:

* through the host list, where it is listed first;
* through an HAProxy configured as some users do, checking members with
  a plain TCP connect and sending every connection to the first one up
  (``balance first``), the old server listed first: once it is back, that
  one address leads only to it.

The library remembers the latest timeline it wrote to and must refuse
the old one: no unit may land on the old server once the new leader took
one.  Through the host list the writer keeps committing on the new
leader; through the one address it waits, saying why, and writes again
on the new leader once HAProxy stops sending it to the old server.
"""

import time

from canonical.database.hosts import servers_for
from canonical.testing.failover import rows
from canonical.testing.patroni import PatroniTestCase, takes_writes

# Patroni keeps synchronous_standby_names pointing at the standby it
# promoted: the old server's commits would wait for it for ever.  An
# asynchronous cluster's (Patroni's default) would not; as that one, the
# old server takes writes.
_ASYNCHRONOUS = ("ALTER SYSTEM SET synchronous_standby_names = ''",
                 "SELECT pg_reload_conf()")


def _poll(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError('no %s within %s s' % (what, timeout))
        time.sleep(0.05)


class TestOldLeaderStillWritable(PatroniTestCase):

    def setUp(self):
        super().setUp()
        cluster = self.cluster
        self.old = cluster.wait_leader()
        topology = cluster.topology()
        # Under synchronous_mode only the synchronous standby is promoted.
        self.successor = [m for m in cluster.members
                          if topology[m.name]['role'] == 'sync_standby'][0]
        self.third = [m for m in cluster.members
                      if m not in (self.old, self.successor)][0]
        self.timeline = self.old.status()['timeline']
        # Runs before PatroniLayer.heal (cleanups run last in, first out).
        self.addCleanup(self.restore_old)

    def restore_old(self):
        old = self.old
        if old.netns.is_cut:
            old.netns.restore()
        if not old.is_running():
            # It diverged on the old timeline: Patroni rewinds it (or
            # heal() makes it again) once it runs under Patroni again.
            old.kill_postgres()
            old.start()

    def orphan_and_replace_the_leader(self, writer):
        """Kill the leader's Patroni (its PostgreSQL runs on, writable)
        and cut it off; wait until Patroni promoted the successor and the
        writer committed there.  The old server's units then."""
        old = self.old
        self.assertIsNotNone(old.kill_patroni())
        old.netns.cut(silent=False)
        new = self.cluster.wait_leader(
            other_than=old, timeout=self.cluster.timings['ttl'] * 6)
        self.assertIs(new, self.successor)
        _poll(lambda: new.status().get('timeline', 0) > self.timeline,
              60, 'promotion of %s' % new.name)
        committed = len(writer.committed)
        writer.wait_for_commits(5, timeout=120)
        later = [c.uid for c in writer.committed[committed:]]
        on_new = set(rows(new, 'SELECT uid FROM ha_unit'))
        self.assertEqual([u for u in later if u not in on_new], [])
        # The old server: still a primary, on the old timeline, and it
        # takes a write of its own.
        self.assertTrue(takes_writes(old))
        for sql in _ASYNCHRONOUS:
            old.psql(sql)
        old.psql("INSERT INTO ha_unit VALUES ('written-on-the-old', 0)",
                 dbname='launchpad_ftest')
        on_old = set(rows(old, 'SELECT uid FROM ha_unit'))
        # What the old server took before the promotion its synchronous
        # standby has too (the unit in flight when it was cut off among
        # them: committed there, its outcome settled on the new leader);
        # nothing the writer committed since is there.
        self.assertEqual(on_old - on_new, {'written-on-the-old'})
        return new, on_old

    def assertOnNew(self, committed):
        on_new = set(rows(self.successor, 'SELECT uid FROM ha_unit'))
        on_old = set(rows(self.old, 'SELECT uid FROM ha_unit'))
        self.assertEqual(
            [(c.uid, c.uid in on_old) for c in committed
             if c.uid not in on_new], [])

    def assertNothingOnOld(self, writer, on_old):
        """No unit reached the old server since it was replaced; every
        unit the writer saw committed is on the new leader."""
        now_on_old = set(rows(self.old, 'SELECT uid FROM ha_unit'))
        on_new = set(rows(self.successor, 'SELECT uid FROM ha_unit'))
        self.assertEqual(now_on_old, on_old)
        self.assertEqual(now_on_old - on_new, {'written-on-the-old'})
        self.assertEqual([c.uid for c in writer.committed
                          if c.uid not in on_new], [])

    def test_refused_through_the_host_list(self):
        old, new = self.old, self.successor
        ztm = self.install(old, new, self.third)    # the old one first
        servers = servers_for(ztm.config)
        writer = self.writer(ztm, attempts=500)
        writer.wait_for_commits(5, timeout=60)
        new, on_old = self.orphan_and_replace_the_leader(writer)
        old.netns.restore()
        refused = servers.stale_refused
        # The library prefers the host that took its last connection:
        # the new leader refuses the writer's connections for a while (as
        # at max_connections), so that it goes down the list and meets
        # the old server, writable again.
        new.psql("SET synchronous_commit = local; "
                 "ALTER ROLE launchpad CONNECTION LIMIT 0")
        try:
            new.psql("SELECT pg_terminate_backend(pid) FROM "
                     "pg_stat_activity WHERE usename = 'launchpad'")
            _poll(lambda: servers.stale_refused > refused, 60,
                  'refusal of the old server')
        finally:
            new.psql("SET synchronous_commit = local; "
                     "ALTER ROLE launchpad CONNECTION LIMIT -1")
        committed = len(writer.committed)
        writer.wait_for_commits(5, timeout=120)
        self.assertOnNew(writer.committed[committed:])
        writer.stop()
        self.assertNothingOnOld(writer, on_old)
        self.assertTrue(takes_writes(old))   # it was there to be taken
        self.assertTrue(any('demoted primary' in line
                            for line in self.log.lines()),
                        self.log.lines())
        print('\n  old leader refused %d times' % (
            servers.stale_refused - refused), end=' ')

    def test_refused_through_a_tcp_checked_haproxy(self):
        old, new = self.old, self.successor
        proxy = self.cluster.add_haproxy([old, new], check='tcp',
                                         balance='first')
        self.addCleanup(proxy.stop)
        ztm = self.install(proxy)
        servers = servers_for(ztm.config)
        writer = self.writer(ztm, attempts=500)
        writer.wait_for_commits(5, timeout=60)
        new, on_old = self.orphan_and_replace_the_leader(writer)
        refused = servers.stale_refused
        old.netns.restore()
        # HAProxy sees the old server's port open again: from then on it
        # sends every new connection there.  The writer's connection to
        # the new leader goes (a restart of it, say) and it must connect
        # again through that one address.
        _poll(lambda: _reaches(proxy, old), 60,
              'HAProxy sending connections to the old server')
        new.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                 "WHERE usename = 'launchpad'")
        _poll(lambda: servers.stale_refused >= refused + 2, 60,
              'refusals of the old server')
        # Only the old server is on offer: the writer waits, saying why,
        # and commits nothing while it is refused again.
        blocked = len(writer.committed)
        _poll(lambda: servers.stale_refused >= refused + 3, 60,
              'another refusal of the old server')
        self.assertEqual(len(writer.committed), blocked)
        self.assertTrue(any('demoted primary' in line
                            for line in self.log.lines()),
                        self.log.lines())
        # The old server goes off the network (as an operator fences
        # it): HAProxy marks it down and the writer commits on the new
        # leader again.
        old.netns.cut(silent=False)
        committed = len(writer.committed)
        writer.wait_for_commits(5, timeout=120)
        self.assertOnNew(writer.committed[committed:])
        writer.stop()
        self.assertNothingOnOld(writer, on_old)
        print('\n  old leader refused %d times through HAProxy' % (
            servers.stale_refused - refused), end=' ')


def _reaches(proxy, member):
    """Whether a new connection through ``proxy`` reaches ``member``."""
    import psycopg2
    try:
        conn = psycopg2.connect(host=proxy.host, port=proxy.port,
                                dbname='launchpad_ftest', user='launchpad',
                                connect_timeout=2)
    except psycopg2.Error:
        return False
    try:
        cur = conn.cursor()
        cur.execute('SELECT host(inet_server_addr())')
        return cur.fetchone()[0] == member.host
    finally:
        conn.close()
