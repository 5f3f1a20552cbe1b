"""Test hosts of their own: network namespaces that can drop off the
network silently or loudly, with PostgreSQL servers inside."""

import ipaddress
import os
import subprocess
import time

import psycopg2
from zope.interface.verify import verifyObject

from canonical.testing.cluster.interfaces import INetworkHost
from canonical.testing.cluster.netns import POOL, NetworkHost
from canonical.testing.cluster.netns import remove_leftovers
from canonical.testing.servers import ServersTestCase


def namespaces():
    return subprocess.run(['ip', 'netns', 'list'], capture_output=True,
                          text=True).stdout


def link_exists(name):
    return subprocess.run(['ip', 'link', 'show', name],
                          capture_output=True).returncode == 0


class TestNetworkHost(ServersTestCase):

    def test_create_and_remove(self):
        host = NetworkHost().create()
        self.addCleanup(host.remove)
        verifyObject(INetworkHost, host)
        network = ipaddress.ip_network(host.network)
        self.assertTrue(network.subnet_of(POOL))
        self.assertEqual(network.prefixlen, 30)
        self.assertIn(ipaddress.ip_address(host.address), network)
        self.assertIn(ipaddress.ip_address(host.gateway), network)
        self.assertIn(host.name, namespaces())
        inside = subprocess.run(host.command(['ip', '-o', 'addr']),
                                capture_output=True, text=True).stdout
        self.assertIn(host.address + '/30', inside)
        host.remove()
        self.assertNotIn(host.name, namespaces())
        self.assertFalse(link_exists(host._host_link))

    def test_what_a_killed_run_left_is_removed(self):
        pid = os.fork()
        if pid == 0:  # a run that dies without cleaning up
            try:
                NetworkHost().create()
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        self.assertIn('zopeless-%d-' % pid, namespaces())
        removed = remove_leftovers()
        self.assertEqual([name.split('-')[1] for name in removed],
                         [str(pid)])
        self.assertNotIn('zopeless-%d-' % pid, namespaces())


class TestServerInNamespace(ServersTestCase):

    def setUp(self):
        super().setUp()
        self.host = self.servers.host()
        self.primary = self.servers.primary(netns=self.host)

    def connect(self, **kw):
        return psycopg2.connect(self.primary.dsn('launchpad_ftest'), **kw)

    def test_listens_on_the_namespace_address_only(self):
        self.assertEqual(self.primary.host, self.host.address)
        conn = self.connect()
        cur = conn.cursor()
        cur.execute('SELECT inet_server_addr()::text, '
                    'inet_client_addr()::text')
        self.assertEqual(cur.fetchone(), (self.host.address + '/32',
                                          self.host.gateway + '/32'))
        conn.close()
        self.assertEqual(self.primary.psql('SHOW listen_addresses').strip(),
                         self.host.address)

    def test_silent_cut_and_restore(self):
        conn = self.connect(tcp_user_timeout=1000)
        self.host.cut()
        self.assertEqual(self.host.is_cut, 'silent')
        started = time.monotonic()
        with self.assertRaises(psycopg2.OperationalError) as e:
            self.connect(connect_timeout=1)
        self.assertIn('timeout expired', str(e.exception))
        self.assertGreater(time.monotonic() - started, 0.9)
        # No reset, no ICMP error: only the user timeout ends the session.
        # (psycopg2 2.9.2, the oldest claimed, raises the base DatabaseError.)
        started = time.monotonic()
        with self.assertRaises(psycopg2.DatabaseError) as e:
            conn.cursor().execute('SELECT 1')
        self.assertGreater(time.monotonic() - started, 0.9)
        self.assertIn('timed out', str(e.exception))
        # The server itself runs on, reachable through its socket.
        self.assertEqual(self.primary.psql('SELECT 1').strip(), '1')
        self.host.restore()
        self.connect(connect_timeout=2).close()

    def test_loud_cut_and_restore(self):
        conn = self.connect()
        self.host.cut(silent=False)
        started = time.monotonic()
        with self.assertRaises(psycopg2.OperationalError):
            conn.cursor().execute('SELECT 1')
        with self.assertRaises(psycopg2.OperationalError) as e:
            self.connect(connect_timeout=5)
        self.assertIn('No route to host', str(e.exception))
        self.assertLess(time.monotonic() - started, 0.5)
        self.host.restore()
        self.connect(connect_timeout=2).close()

    def test_standbys_inside_and_outside(self):
        outside = self.servers.standby(self.primary, 'n2')
        inside = self.servers.standby(self.primary, 'n3', netns=self.host)
        self.assertEqual(outside.host, '127.0.0.1')
        self.assertEqual(inside.host, self.host.address)
        rows = self.primary.psql(
            'SELECT application_name, client_addr FROM pg_stat_replication '
            'ORDER BY 1').split()
        self.assertEqual(rows, ['n2|%s' % self.host.gateway,
                                'n3|%s' % self.host.address])
