"""Standbys of the private cluster: streaming, synchronous replication,
promotion, fencing, switchover, and PgBouncer in front.

Every test makes its own servers (copies of a seed holding the sample
database) and deletes them afterwards; the shared test cluster is never
touched.
"""

import os
import threading
import time

import psycopg2
import psycopg2.errors
from zope.interface.verify import verifyObject

from canonical.testing.cluster import Cluster, ExternalServer
from canonical.testing.cluster.interfaces import IClusterServer
from canonical.testing.cluster.interfaces import IPgBouncer
from canonical.testing.cluster.interfaces import IReplicationNode
from canonical.testing.cluster.interfaces import IServer
from canonical.testing.cluster.interfaces import ReplicationError
from canonical.testing.servers import ServersTestCase


def connect(server, dbname='launchpad_ftest', **kw):
    conn = psycopg2.connect(server.dsn(dbname), connect_timeout=5, **kw)
    conn.autocommit = True
    return conn


def one(server, sql, dbname='launchpad_ftest'):
    conn = connect(server, dbname)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchone()[0]
    finally:
        conn.close()


class TestStandby(ServersTestCase):

    def test_a_standby_streams_and_refuses_writes(self):
        primary = self.servers.primary()
        standby = self.servers.standby(primary, 'n2')
        verifyObject(IReplicationNode, standby)
        verifyObject(IClusterServer, Cluster(primary.base))
        verifyObject(IServer, ExternalServer('localhost', 5432))
        self.assertFalse(primary.is_standby())
        self.assertTrue(standby.is_standby())
        self.assertEqual(standby.host, '127.0.0.1')
        self.assertNotEqual(standby.port, primary.port)
        self.assertEqual(standby.system_identifier(),
                         primary.system_identifier())
        one(primary, "UPDATE person SET karma = 7 WHERE id = 1 RETURNING 1")
        standby.wait_replayed(primary.wal_lsn())
        self.assertEqual(one(standby, 'SELECT karma FROM person WHERE id = 1'),
                         7)
        with self.assertRaises(psycopg2.errors.ReadOnlySqlTransaction) as e:
            one(standby, 'UPDATE person SET karma = 8 RETURNING 1')
        self.assertEqual(e.exception.pgcode, '25006')
        self.assertEqual(one(primary, "SELECT application_name FROM "
                             "pg_stat_replication", 'postgres'), 'n2')

    def test_synchronous_standby(self):
        primary = self.servers.primary()
        standby = self.servers.standby(primary, 'n2', synchronous=True)
        self.assertEqual(primary.synchronous_names(), ['n2'])
        self.assertEqual(one(primary, "SELECT sync_state FROM "
                             "pg_stat_replication", 'postgres'), 'sync')
        # Synchronous: a commit acknowledged by the primary is already
        # on the standby, with no waiting.
        one(primary, "UPDATE person SET karma = 9 WHERE id = 1 RETURNING 1")
        self.assertEqual(standby.psql(
            'SELECT karma FROM person WHERE id = 1',
            dbname='launchpad_ftest').strip(), '9')
        primary.set_synchronous([])
        self.assertEqual(one(primary, "SELECT sync_state FROM "
                             "pg_stat_replication", 'postgres'), 'async')


class TestPromotion(ServersTestCase):

    def assertCommitsPromptly(self, server):
        # statement_timeout cancels a commit stuck waiting for standbys
        # with a warning (the commit is then local only): time and
        # warnings both tell.
        conn = connect(server, options='-c statement_timeout=3000')
        started = time.monotonic()
        with conn.cursor() as cur:
            cur.execute('UPDATE person SET karma = karma + 1 WHERE id = 1')
        elapsed = time.monotonic() - started
        notices = list(conn.notices)
        conn.close()
        self.assertLess(elapsed, 2.0)
        self.assertEqual(notices, [])

    def test_promote_starts_a_new_timeline(self):
        primary = self.servers.primary()
        standby = self.servers.standby(primary, 'n2')
        self.assertEqual(primary.timeline(), 1)
        self.assertEqual(standby.timeline(), 1)
        primary.stop('immediate')
        standby.promote()
        self.assertFalse(standby.is_standby())
        # At once, without waiting for a checkpoint.
        self.assertEqual(standby.timeline(), 2)
        self.assertCommitsPromptly(standby)

    def test_a_standby_never_inherits_synchronous_standby_names(self):
        # The trap: a standby cloned after synchronous replication was set
        # up would, once promoted, wait for standbys it does not have.
        primary = self.servers.primary()
        self.servers.standby(primary, 'n2', synchronous=True)
        primary.psql("ALTER SYSTEM SET synchronous_standby_names = 'n2'")
        primary.psql('SELECT pg_reload_conf()')
        late = self.servers.standby(primary, 'n3')
        self.assertEqual(late.psql('SHOW synchronous_standby_names').strip(),
                         '')
        primary.stop('immediate')
        late.promote()
        self.assertCommitsPromptly(late)

    def test_fence_refuses_writes_in_place(self):
        primary = self.servers.primary()
        idle = connect(primary)
        primary.fence()
        for conn in (idle, connect(primary)):
            with self.assertRaises(psycopg2.errors.ReadOnlySqlTransaction):
                conn.cursor().execute('UPDATE person SET karma = 1')
        self.assertFalse(primary.is_standby())  # still a primary
        primary.unfence()
        idle.cursor().execute('UPDATE person SET karma = 1')
        idle.close()

    def test_switchover_the_old_primary_follows_its_successor(self):
        primary = self.servers.primary()
        standby = self.servers.standby(primary, 'n2')
        primary.stop('immediate')
        standby.promote()
        one(standby, 'UPDATE person SET karma = 42 WHERE id = 1 RETURNING 1')
        started = time.monotonic()
        primary.follow(standby)
        rewind_seconds = time.monotonic() - started
        self.assertTrue(primary.is_standby())
        self.assertEqual(primary.timeline(), 2)
        primary.wait_replayed(standby.wal_lsn())
        self.assertEqual(one(primary, 'SELECT karma FROM person WHERE id = 1'),
                         42)
        # And back again, with a fresh base backup this time.
        standby.stop('fast')
        primary.promote()
        started = time.monotonic()
        standby.follow(primary, rewind=False)
        basebackup_seconds = time.monotonic() - started
        self.assertTrue(standby.is_standby())
        self.assertEqual(standby.timeline(), 3)
        print('\n  follow(): pg_rewind %.2f s, base backup %.2f s'
              % (rewind_seconds, basebackup_seconds), end=' ')

    def test_a_lagging_standby_misses_what_came_after(self):
        primary = self.servers.primary()
        standby = self.servers.standby(primary, 'n2')
        standby.pause_streaming()
        one(primary, 'UPDATE person SET karma = 77 WHERE id = 1 RETURNING 1')
        primary.stop('immediate')
        standby.promote()
        self.assertEqual(one(standby, 'SELECT karma FROM person WHERE id = 1'),
                         130)

    def test_promoting_a_primary_is_an_error(self):
        primary = self.servers.primary()
        self.assertRaises(ReplicationError, primary.promote, 5)
        self.assertRaises(ReplicationError, primary.make_standby,
                          primary.base)


class TestPgBouncer(ServersTestCase):

    def setUp(self):
        super().setUp()
        self.primary = self.servers.primary()
        self.bouncer = self.servers.bouncer(self.primary)
        verifyObject(IPgBouncer, self.bouncer)

    def work(self, conn, value):
        with conn.cursor() as cur:
            cur.execute('UPDATE person SET karma = %s WHERE id = 1', (value,))
            cur.execute('SELECT pg_backend_pid()')
            pid = cur.fetchone()[0]
        conn.commit()
        return pid

    def test_transaction_pooling(self):
        conn = psycopg2.connect(self.bouncer.dsn('launchpad_ftest'))
        pid = self.work(conn, 1)
        # libpq's backend pid is PgBouncer's own invention.
        self.assertNotEqual(conn.info.backend_pid, pid)
        self.assertEqual(self.bouncer.server_pids(), [pid])
        self.assertEqual(self.bouncer.target,
                         (self.primary.host, self.primary.port))
        conn.close()

    def test_admin_events(self):
        conn = psycopg2.connect(self.bouncer.dsn('launchpad_ftest'))
        first = self.work(conn, 1)
        self.bouncer.pause()
        done = threading.Event()

        def held():
            self.work(conn, 2)
            done.set()
        thread = threading.Thread(target=held)
        thread.start()
        self.assertFalse(done.wait(0.3))  # PAUSE holds new queries
        self.bouncer.resume()
        thread.join(10)
        self.assertTrue(done.is_set())
        self.bouncer.reconnect()
        second = self.work(conn, 3)
        self.assertNotEqual(first, second)  # RECONNECT closed the old one
        self.assertEqual(self.bouncer.kill_server_connections(), 1)
        self.assertNotEqual(self.work(conn, 4), second)
        self.bouncer.restart()
        with self.assertRaises(psycopg2.OperationalError):
            self.work(conn, 5)
        conn = psycopg2.connect(self.bouncer.dsn('launchpad_ftest'))
        self.assertEqual(self.work(conn, 6) > 0, True)
        conn.close()

    def test_retarget(self):
        standby = self.servers.standby(self.primary, 'n2')
        self.primary.stop('immediate')
        standby.promote()
        self.bouncer.retarget(standby.host, standby.port)
        conn = psycopg2.connect(self.bouncer.dsn('launchpad_ftest'))
        self.work(conn, 5)
        conn.close()
        self.assertEqual(one(standby, 'SELECT karma FROM person WHERE id = 1'),
                         5)
        self.assertTrue(os.path.exists(self.bouncer.logfile))
