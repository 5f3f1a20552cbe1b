"""Tests of the sample database harness and the LaunchpadLayer."""

import statistics
import threading
import time
import unittest

import psycopg2
import psycopg2.errors

from canonical.testing.cluster import ensure_cluster
from canonical.launchpad.ftests.harness import LaunchpadTestSetup
from canonical.testing.layers import DatabaseLayer, LaunchpadLayer


def database_exists(name):
    server = ensure_cluster()
    conn = psycopg2.connect(host=server.host, port=server.port,
                            user=server.superuser, dbname='postgres')
    try:
        with conn.cursor() as cur:
            cur.execute('SELECT 1 FROM pg_database WHERE datname = %s',
                        (name,))
            return cur.fetchone() is not None
    finally:
        conn.close()


class HarnessTests(unittest.TestCase):

    layer = DatabaseLayer

    def setUp(self):
        self.harness = LaunchpadTestSetup()

    def tearDown(self):
        self.harness.tearDown()

    def test_clone_has_sample_data(self):
        self.harness.setUp()
        cur = self.harness.connect().cursor()
        cur.execute('SELECT id, name, displayname, givenname, familyname '
                    'FROM person WHERE id IN (1, 2) ORDER BY id')
        self.assertEqual(cur.fetchall(), [
            (1, 'sabdfl', 'Mark Shuttleworth', 'Mark', 'Shuttleworth'),
            (2, 'lifeless', 'Robert Collins', 'Robert', 'Collins')])
        cur.execute('SELECT count(*) FROM person')
        self.assertGreaterEqual(cur.fetchone()[0], 22)
        cur.execute('SELECT count(*) FROM person WHERE teamowner IS NOT NULL')
        self.assertGreaterEqual(cur.fetchone()[0], 2)
        cur.execute('SELECT current_user, current_database()')
        self.assertEqual(cur.fetchone(), ('launchpad', 'launchpad_ftest'))

    def test_schema_rules(self):
        self.harness.setUp()
        conn = self.harness.connect()
        cur = conn.cursor()
        # The sequence is in step with the sample rows.
        cur.execute("INSERT INTO person (name, displayname) "
                    "VALUES ('newcomer', 'New Comer') "
                    "RETURNING id, karma, datecreated")
        new_id, karma, created = cur.fetchone()
        cur.execute('SELECT max(id) FROM person WHERE id <> %s', (new_id,))
        self.assertEqual(new_id, cur.fetchone()[0] + 1)
        self.assertEqual(karma, 0)
        self.assertIsNotNone(created)
        conn.commit()
        cur.execute("SELECT tableowner FROM pg_tables "
                    "WHERE tablename = 'person'")
        self.assertEqual(cur.fetchone()[0], 'launchpad')
        for statement, error in [
                ("INSERT INTO person (name) VALUES ('Bad Name')",
                 psycopg2.errors.CheckViolation),
                ("INSERT INTO person (name) VALUES ('sabdfl')",
                 psycopg2.errors.UniqueViolation),
                ('UPDATE person SET teamowner = id WHERE id = 17',
                 psycopg2.errors.CheckViolation),
                ('UPDATE person SET teamowner = 9999 WHERE id = 17',
                 psycopg2.errors.ForeignKeyViolation)]:
            with self.assertRaises(error, msg=statement):
                cur.execute(statement)
            conn.rollback()

    def test_each_setup_gives_a_fresh_copy(self):
        self.harness.setUp()
        conn = self.harness.connect()
        conn.cursor().execute("UPDATE person SET displayname = 'Changed' "
                              "WHERE id = 1")
        conn.commit()
        self.harness.setUp()  # again, while conn is still open
        self.assertTrue(self._dead(conn))  # its database was replaced
        cur = self.harness.connect().cursor()
        cur.execute('SELECT displayname FROM person WHERE id = 1')
        self.assertEqual(cur.fetchone()[0], 'Mark Shuttleworth')

    def _dead(self, conn):
        try:
            conn.cursor().execute('SELECT 1')
        except psycopg2.Error:
            return True
        return False

    def test_teardown_drops_and_closes(self):
        self.harness.setUp()
        mine = self.harness.connect()
        server = ensure_cluster()
        # A connection the harness did not make is disconnected too.
        other = psycopg2.connect(host=server.host, port=server.port,
                                 user='launchpad', dbname='launchpad_ftest')
        try:
            self.harness.tearDown()
            self.assertTrue(mine.closed)
            self.assertFalse(database_exists('launchpad_ftest'))
            self.assertTrue(database_exists('launchpad_ftest_template'))
            with self.assertRaises(psycopg2.OperationalError):
                other.cursor().execute('SELECT 1')
        finally:
            other.close()
        self.harness.tearDown()  # twice is harmless

    def test_clone_while_template_is_busy(self):
        # PostgreSQL waits about 5 s for other sessions to leave the
        # template, then fails; the harness retries beyond that.
        LaunchpadTestSetup().ensureTemplate()
        server = ensure_cluster()
        holder = psycopg2.connect(host=server.host, port=server.port,
                                  user='launchpad',
                                  dbname='launchpad_ftest_template')
        hold = 6.5
        released = threading.Event()

        def release():
            time.sleep(hold)
            holder.close()
            released.set()

        thread = threading.Thread(target=release)
        started = time.monotonic()
        thread.start()
        try:
            impatient = LaunchpadTestSetup()
            impatient.clone_retry_seconds = 0
            with self.assertRaises(psycopg2.errors.ObjectInUse) as caught:
                impatient.setUp()
            impatient.tearDown()
            self.assertIn('is being accessed by other users',
                          str(caught.exception))
            self.assertFalse(released.is_set())
            self.harness.setUp()
            elapsed = time.monotonic() - started
        finally:
            thread.join()
        self.assertGreaterEqual(elapsed, hold - 0.5)
        cur = self.harness.connect().cursor()
        cur.execute('SELECT name FROM person WHERE id = 1')
        self.assertEqual(cur.fetchone()[0], 'sabdfl')

    def test_half_built_template_is_rebuilt(self):
        harness = LaunchpadTestSetup(dbname='zopeless_half_test',
                                     template='zopeless_half_template')
        admin = harness.superConnection()
        try:
            cur = admin.cursor()
            cur.execute('DROP DATABASE IF EXISTS zopeless_half_template')
            cur.execute('CREATE DATABASE zopeless_half_template')
            harness.setUp()
            cur = harness.connect().cursor()
            cur.execute('SELECT name FROM person WHERE id = 2')
            self.assertEqual(cur.fetchone()[0], 'lifeless')
            self.assertTrue(database_exists('zopeless_half_test'))
            self.assertFalse(LaunchpadTestSetup(
                template='zopeless_half_template').ensureTemplate())
        finally:
            harness.tearDown()
            admin = harness.superConnection()
            admin.cursor().execute(
                'DROP DATABASE IF EXISTS zopeless_half_template')
            harness.closeConnections()
        self.assertFalse(database_exists('zopeless_half_test'))
        self.assertFalse(database_exists('launchpad_ftest'))

    def test_names_can_be_overridden(self):
        class Custom(LaunchpadTestSetup):
            dbname = 'zopeless_custom_test'
        harness = Custom()
        harness.setUp()
        try:
            self.assertEqual(harness.getDBName(), 'zopeless_custom_test')
            self.assertTrue(database_exists('zopeless_custom_test'))
            self.assertFalse(database_exists('launchpad_ftest'))
        finally:
            harness.tearDown()
        self.assertFalse(database_exists('zopeless_custom_test'))

    def test_clone_time(self):
        times = []
        for _ in range(5):
            started = time.monotonic()
            self.harness.setUp()
            times.append(time.monotonic() - started)
        self.assertLess(statistics.median(times), 1.0, times)


class LaunchpadLayerTests(unittest.TestCase):
    """Each test gets its own copy; changes do not leak between tests."""

    layer = LaunchpadLayer

    def _check_and_change(self):
        harness = LaunchpadLayer.harness
        conn = harness.connect()
        cur = conn.cursor()
        cur.execute("SELECT count(*) FROM person WHERE name = 'leaked'")
        self.assertEqual(cur.fetchone()[0], 0)
        cur.execute("INSERT INTO person (name) VALUES ('leaked')")
        conn.commit()

    def test_first(self):
        self._check_and_change()

    def test_second(self):
        self._check_and_change()

    def test_sample_person(self):
        import os
        server = ensure_cluster()
        conn = psycopg2.connect(host=os.environ['PGHOST'],
                                port=os.environ['PGPORT'],
                                user=os.environ['LP_DBUSER'],
                                dbname=os.environ['LP_DBNAME'])
        try:
            cur = conn.cursor()
            cur.execute('SELECT name FROM person WHERE id = 1')
            self.assertEqual(cur.fetchone()[0], 'sabdfl')
            self.assertEqual(os.environ['PGPORT'], str(server.port))
        finally:
            conn.close()
