"""The test kit's TCP proxy, against the real server: what it counts, and
each fault it makes (the fault tests show what the library does then);
and the kit's wait_for()."""

import socket
import threading
import time
import unittest

import psycopg2
from zope.interface.verify import verifyObject

from canonical.database.ftests import getDBHost
from canonical.database.ftests import getDBPort
from canonical.testing.interfaces import ILinkOwner
from canonical.testing.interfaces import ITCPProxy
from canonical.testing.tcpproxy import TCPProxy
from canonical.testing.waiting import wait_for
from canonical.testing.layers import DatabaseLayer


class ProxyTestCase(unittest.TestCase):

    layer = DatabaseLayer

    def setUp(self):
        # Sessions an earlier test closed or cut may still be ending on the
        # server; the counts below are of this test's sessions only.
        wait_for(lambda: self.backends() == 0, 10,
                 'earlier test sessions to end')
        self.proxy = TCPProxy(getDBHost(), getDBPort())
        self.addCleanup(self.proxy.close)

    def connect(self, autocommit=False):
        conn = psycopg2.connect(host=self.proxy.host, port=self.proxy.port,
                                user='postgres', dbname='postgres',
                                application_name='tcpproxy-test')
        conn.autocommit = autocommit
        self.addCleanup(conn.close)
        return conn

    def backends(self):
        """Server sessions of this test, seen past the proxy."""
        conn = psycopg2.connect(host=getDBHost(), port=getDBPort(),
                                user='postgres', dbname='postgres')
        try:
            cursor = conn.cursor()
            cursor.execute("SELECT count(*) FROM pg_stat_activity "
                           "WHERE application_name = 'tcpproxy-test'")
            return cursor.fetchone()[0]
        finally:
            conn.close()


class TestFigures(ProxyTestCase):

    def test_provides_its_interface(self):
        self.assertTrue(verifyObject(ITCPProxy, self.proxy))
        self.assertTrue(verifyObject(ILinkOwner, self.proxy))

    def test_counts_round_trips_and_statements(self):
        conn = self.connect()
        self.assertEqual(self.proxy.accepted, 1)
        self.assertEqual(self.proxy.messages['startup'], 1)
        self.proxy.reset_counts()
        cursor = conn.cursor()
        cursor.execute('select 1')
        conn.commit()
        figures = self.proxy.snapshot()
        self.assertEqual(figures['statements'], ['BEGIN', 'SELECT', 'COMMIT'])
        self.assertEqual(figures['round_trips'], 3)
        self.assertEqual(self.proxy.round_trips, 3)
        self.assertEqual(figures['open_links'], 1)


class TestFaults(ProxyTestCase):

    def test_delay_adds_latency_without_limiting_throughput(self):
        conn = self.connect()
        conn.autocommit = True
        cursor = conn.cursor()
        self.proxy.set_delay(down=0.05, up=0.03)
        started = time.monotonic()
        cursor.execute('select 1')
        self.assertGreaterEqual(time.monotonic() - started, 0.08)
        # 8 MB come back in over a hundred chunks: each is late by the same
        # 50 ms, not by 50 ms more than the one before it.
        started = time.monotonic()
        cursor.execute("select repeat('x', 8000000)")
        self.assertEqual(len(cursor.fetchone()[0]), 8000000)
        self.assertLess(time.monotonic() - started, 2.0)

    def test_stall_holds_new_connections_until_resumed(self):
        self.proxy.stall()
        conns = []
        thread = threading.Thread(target=lambda: conns.append(
            self.connect()))
        thread.start()
        self.proxy.wait(lambda p: p.accepted == 1, what='the connection')
        self.assertEqual(self.backends(), 0)  # a black hole: no upstream
        self.assertTrue(thread.is_alive())
        self.proxy.resume()
        thread.join(10)
        self.assertEqual(len(conns), 1)
        self.assertEqual(self.backends(), 1)

    def test_cut_ends_every_link(self):
        conns = [self.connect(), self.connect()]
        self.assertEqual(self.proxy.cut(), 2)
        for conn in conns:
            with self.assertRaises(psycopg2.OperationalError) as caught:
                conn.cursor().execute('select 1')
            self.assertIn('closed the connection', str(caught.exception))
        self.assertEqual(self.proxy.cuts, 2)
        self.proxy.wait(lambda p: p.open_links == 0, what='links to close')

    def test_a_hard_cut_resets_the_connection(self):
        for hard in (False, True):
            with socket.create_connection((self.proxy.host,
                                           self.proxy.port)) as sock:
                self.proxy.wait(lambda p: p.open_links == 1,
                                what='the link')
                self.assertEqual(self.proxy.cut(hard=hard), 1)
                if hard:
                    self.assertRaises(ConnectionResetError, sock.recv, 1)
                else:
                    self.assertEqual(sock.recv(1), b'')  # FIN
            self.proxy.wait(lambda p: p.open_links == 0, what='the cut')

    def test_refuse_then_admit(self):
        self.proxy.refuse()
        self.assertRaises(psycopg2.OperationalError, self.connect)
        self.assertEqual(self.proxy.refused, 1)
        self.proxy.admit()
        self.connect()
        self.assertEqual(self.proxy.accepted, 1)

    def test_trap_drops_the_statement(self):
        cursor = self.connect(autocommit=True).cursor()
        self.proxy.trap('SELECT pg_sleep', forward=False)
        cursor.execute('SELECT 1')  # not the one trapped
        self.assertRaises(psycopg2.OperationalError, cursor.execute,
                          'SELECT pg_sleep(0)')
        self.assertEqual(self.proxy.sprung, 1)
        self.proxy.trap('COMMIT')
        self.assertEqual(self.proxy.disarm(), 1)

    def test_trap_forwards_the_statement_and_withholds_the_answer(self):
        direct = psycopg2.connect(host=getDBHost(), port=getDBPort(),
                                  user='postgres', dbname='postgres')
        direct.autocommit = True
        self.addCleanup(direct.close)
        cursor = direct.cursor()
        cursor.execute('CREATE TABLE tcpproxy_trap (i int)')
        self.addCleanup(cursor.execute, 'DROP TABLE tcpproxy_trap')
        self.proxy.trap('insert', forward=True)
        self.assertRaises(psycopg2.OperationalError,
                          self.connect(autocommit=True).cursor().execute,
                          'INSERT INTO tcpproxy_trap VALUES (7)')
        self.assertEqual(self.proxy.sprung, 1)
        # The server's side closes once it answered: it has acted.
        self.proxy.wait(lambda p: p.open_links == 0, what='the answer')
        cursor.execute('SELECT i FROM tcpproxy_trap')
        self.assertEqual(cursor.fetchall(), [(7,)])


class TestWaitFor(unittest.TestCase):
    """The test kit's wait, which the proxy's wait() uses too."""

    def test_returns_the_first_true_value(self):
        from canonical.testing.waiting import wait_for
        values = iter([0, None, 'ready'])
        self.assertEqual(wait_for(lambda: next(values), 5), 'ready')

    def test_times_out_loudly_naming_what_it_waited_for(self):
        from canonical.testing.interfaces import WaitTimeout
        from canonical.testing.waiting import wait_for
        condition = threading.Condition()
        with self.assertRaises(WaitTimeout) as caught:
            wait_for(lambda: False, 0.05, 'the moon', condition=condition)
        self.assertIsInstance(caught.exception, AssertionError)
        self.assertIn('waiting for the moon', str(caught.exception))
