"""A job writing through PgBouncer (transaction pooling) while PgBouncer, or
the server behind it, has an event: each costs at most one unit, and every
unit acknowledged is in the database.
"""

from canonical.testing.failover import FailoverTestCase
from canonical.testing.waiting import wait_for


class TestPgBouncerEvents(FailoverTestCase):
    """A job writing through PgBouncer (transaction pooling) while PgBouncer
    or the server behind it has an event: at most one unit each."""

    def setUp(self):
        super().setUp()
        self.primary = self.servers.primary()
        self.bouncer = self.servers.bouncer(self.primary)
        self.ztm = self.install(self.bouncer)
        self.writer = self.writer(self.ztm)
        self.writer.wait_for_commits(5)

    def assertCostAtMostOne(self):
        self.writer.wait_for_commits(5)
        times = [c.at for c in self.writer.committed]
        gap = max(b - a for a, b in zip(times, times[1:]))
        self.assertCostAtMost(self.writer, 1)
        self.assertAllOn(self.primary, self.writer)
        return gap

    def waiting_clients(self):
        rows = self.bouncer.admin('SHOW POOLS', header=True)
        column = rows[0].index('cl_waiting')
        return sum(int(row[column]) for row in rows[1:]
                   if row[0] == 'launchpad_ftest')

    def test_pause_and_resume(self):
        self.bouncer.pause()
        try:
            # The job's next statement waits in PgBouncer.
            wait_for(self.waiting_clients, what='the job held by PAUSE')
            held = len(self.writer.committed)
        finally:
            self.bouncer.resume()
        self.writer.wait_for_commits(5)
        self.assertGreater(len(self.writer.committed), held)
        self.assertCostAtMostOne()
        self.assertEqual(self.writer.errors, [])

    def test_reconnect(self):
        self.bouncer.reconnect()
        self.assertCostAtMostOne()
        self.assertEqual(self.writer.errors, [])

    def test_killed_server_connections(self):
        self.bouncer.kill_server_connections()
        self.writer.wait_for_commits(3)
        self.bouncer.kill_server_connections()
        self.assertCostAtMostOne()

    def test_pgbouncer_restart(self):
        self.bouncer.restart()
        self.assertCostAtMostOne()

    def test_postgresql_restart_behind_pgbouncer(self):
        self.primary.restart('fast')
        gap = self.assertCostAtMostOne()
        print('\n  PostgreSQL restart behind PgBouncer (server_login_retry '
              '%s s): longest gap between commits %.2f s'
              % (self.bouncer.settings['server_login_retry'], gap), end=' ')

    def test_failover_behind_pgbouncer(self):
        # The primary is fenced, its synchronous standby promoted, and
        # PgBouncer pointed at it (RELOAD): the job follows.
        standby = self.servers.standby(self.primary, 'n2', synchronous=True)
        self.writer.wait_for_commits(3, port=self.primary.port)
        self.primary.fence()
        standby.wait_replayed(self.primary.wal_lsn())
        standby.promote()
        self.bouncer.retarget(standby.host, standby.port)
        self.writer.wait_for_commits(5, port=standby.port)
        self.assertCostAtMost(self.writer, 1)
        self.assertAllOn(standby, self.writer)
