"""Tests of the private PostgreSQL cluster (canonical.testing.cluster).

Tests that stop, kill or restart a server use their own throwaway cluster
in a temporary directory, so the shared cluster of the test run is never
disturbed.  Its command line's errors, and the cluster run by an ordinary
user, are in test_cluster_cli.py.
"""

import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

import psycopg2

from canonical.database.processes import pid_alive
from canonical.testing.cluster import (
    Cluster, ExternalServer, ExternalServerError,
    ensure_cluster)
from canonical.testing.waiting import wait_for
from canonical.testing.layers import DatabaseLayer


def connect(server, user=None, dbname='postgres', **kw):
    return psycopg2.connect(host=server.host, port=server.port,
                            user=user or server.superuser, dbname=dbname,
                            connect_timeout=10, **kw)


def query(server, statement, **kw):
    conn = connect(server, **kw)
    try:
        with conn.cursor() as cur:
            cur.execute(statement)
            return cur.fetchone()[0]
    finally:
        conn.close()


def process_uid(pid):
    with open('/proc/%d/status' % pid) as f:
        for line in f:
            if line.startswith('Uid:'):
                return int(line.split()[1])
    raise AssertionError('no Uid line for %d' % pid)


def wait_gone(pid, timeout=10):
    wait_for(lambda: not pid_alive(pid), timeout, 'process %d to end' % pid)


def cli_env(**extra):
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(p for p in sys.path if p)
    env.update(extra)
    return env


def run_cli(*args, env=None):
    return subprocess.run(
        [sys.executable, '-m', 'canonical.testing.cluster'] + list(args),
        capture_output=True, text=True, env=env or cli_env(), timeout=120)


def make_tempdir(prefix):
    # mkdtemp gives a 0700 directory: as root the server user cannot reach
    # it, which exercises the relocation of the cluster files.
    return tempfile.mkdtemp(prefix=prefix)


class SharedClusterTests(unittest.TestCase):
    """The cluster every database test of the run uses."""

    layer = DatabaseLayer

    def test_start_is_idempotent(self):
        first = ensure_cluster()
        pid = first.pid
        self.assertIsNotNone(pid)
        again = Cluster().start()
        self.assertEqual(again.pid, pid)
        self.assertEqual(again.port, first.port)
        self.assertTrue(again.is_running())

    def test_cli_start_and_status(self):
        server = ensure_cluster()
        result = run_cli('start')
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn('127.0.0.1:%s' % server.port, result.stdout)
        self.assertEqual(server.pid, Cluster().pid)  # reused, not restarted
        result = run_cli('status')
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn('running on 127.0.0.1:%s pid %s'
                      % (server.port, server.pid), result.stdout)

    def test_old_module_name_still_works_and_says_so(self):
        server = ensure_cluster()
        result = subprocess.run(
            [sys.executable, '-m', 'canonical.database.cluster', 'status'],
            capture_output=True, text=True, env=cli_env(), timeout=120)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn('running on 127.0.0.1:%s' % server.port, result.stdout)
        self.assertIn('deprecated: use python -m canonical.testing.cluster',
                      result.stderr)

    def test_env_output(self):
        server = ensure_cluster()
        result = run_cli('env')
        self.assertEqual(result.returncode, 0, result.stderr)
        lines = result.stdout.splitlines()
        self.assertEqual(lines, [
            'export PGHOST=127.0.0.1',
            'export PGPORT=%s' % server.port,
            'export PGUSER=%s' % server.superuser])
        values = dict(re.match(r'export (\w+)=(.*)', l).groups()
                      for l in lines)
        conn = psycopg2.connect(host=values['PGHOST'], port=values['PGPORT'],
                                user=values['PGUSER'], dbname='postgres')
        try:
            with conn.cursor() as cur:
                cur.execute('SELECT current_user')
                self.assertEqual(cur.fetchone()[0], 'postgres')
        finally:
            conn.close()

    def test_state_file_records_port(self):
        server = ensure_cluster()
        with open(os.path.join(server.base, 'cluster.json')) as f:
            state = json.load(f)
        self.assertEqual(state['port'], server.port)
        self.assertEqual(state['area'], server.area)

    def test_server_settings(self):
        server = ensure_cluster()
        conn = connect(server)
        try:
            cur = conn.cursor()
            settings = {}
            for name in ('max_prepared_transactions', 'max_connections',
                         'listen_addresses', 'lc_messages', 'fsync',
                         'server_encoding'):
                cur.execute('SHOW ' + name)
                settings[name] = cur.fetchone()[0]
        finally:
            conn.close()
        self.assertEqual(settings, {
            'max_prepared_transactions': '100', 'max_connections': '300',
            'listen_addresses': '127.0.0.1', 'lc_messages': 'C',
            'fsync': 'off', 'server_encoding': 'UTF8'})

    def test_roles(self):
        server = ensure_cluster()
        self.assertTrue(query(
            server, "SELECT rolsuper AND rolcreatedb AND rolcanlogin "
                    "FROM pg_roles WHERE rolname = 'launchpad'"))
        self.assertEqual(query(server, 'SELECT current_user',
                               user='launchpad'), 'launchpad')

    def test_password_role(self):
        server = ensure_cluster()
        self.assertEqual(
            query(server, 'SELECT current_user', user='zopeless_pw',
                  password='canary-secret-9'), 'zopeless_pw')
        with self.assertRaises(psycopg2.OperationalError) as caught:
            connect(server, user='zopeless_pw', password='wrong')
        self.assertIn('password authentication failed', str(caught.exception))
        with self.assertRaises(psycopg2.OperationalError):
            connect(server, user='zopeless_pw')  # no password at all

    def test_server_is_unprivileged(self):
        server = ensure_cluster()
        uid = process_uid(server.pid)
        self.assertNotEqual(uid, 0)
        if os.geteuid() == 0:
            self.assertIn(server.runas, ('postgres', 'zopeless-pg',
                                         os.environ.get('ZOPELESS_PG_USER')))
            self.assertEqual(uid, pwd.getpwnam(server.runas).pw_uid)
        else:
            self.assertIsNone(server.runas)
            self.assertEqual(uid, os.geteuid())

    def test_getdbhost_getdbport(self):
        from canonical.database.ftests import getDBHost, getDBPort
        server = ensure_cluster()
        self.assertEqual(getDBHost(), '127.0.0.1')
        self.assertEqual(getDBPort(), server.port)
        saved = os.environ.pop('PGHOST'), os.environ.pop('PGPORT')
        try:
            self.assertEqual(getDBHost(), '127.0.0.1')
            self.assertEqual(getDBPort(), server.port)  # from the cluster
        finally:
            os.environ['PGHOST'], os.environ['PGPORT'] = saved

    def test_layer_environment(self):
        server = ensure_cluster()
        self.assertEqual(os.environ['PGHOST'], '127.0.0.1')
        self.assertEqual(os.environ['PGPORT'], str(server.port))
        self.assertEqual(os.environ['LP_DBNAME'], 'launchpad_ftest')
        self.assertEqual(os.environ['LP_DBUSER'], 'launchpad')


class ThrowawayClusterLayer:
    """A cluster of its own in a temporary directory, deleted afterwards."""

    tmp = base = cluster = None
    cold_start_seconds = None

    @classmethod
    def setUp(cls):
        cls.tmp = make_tempdir('zopeless-cluster-test-')
        cls.base = os.path.join(cls.tmp, 'var')
        started = time.monotonic()
        cls.cluster = Cluster(cls.base).start()
        cls.cold_start_seconds = time.monotonic() - started

    @classmethod
    def tearDown(cls):
        cls.cluster.destroy()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    @classmethod
    def testSetUp(cls):
        cls.cluster.start()

    @classmethod
    def testTearDown(cls):
        pass


class ThrowawayClusterTests(unittest.TestCase):
    """Start, stop, restart and crash a cluster of its own."""

    layer = ThrowawayClusterLayer

    @property
    def cluster(self):
        return ThrowawayClusterLayer.cluster

    @property
    def base(self):
        return ThrowawayClusterLayer.base

    def assertAnswers(self, cluster):
        self.assertEqual(query(cluster, 'SELECT 42'), 42)

    def test_layout(self):
        c = self.cluster
        self.assertTrue(os.path.exists(os.path.join(c.datadir, 'PG_VERSION')))
        self.assertTrue(os.path.exists(c.logfile))
        if os.geteuid() == 0:
            # The server user cannot enter a 0700 root directory.
            self.assertTrue(c.area.startswith('/var/tmp/zopeless-'), c.area)
        else:
            self.assertEqual(c.area, os.path.join(self.base, 'pg'))
        with open(os.path.join(self.base, 'cluster.json')) as f:
            self.assertEqual(json.load(f)['area'], c.area)

    def test_stop_and_start(self):
        c = self.cluster
        port = c.port
        self.assertTrue(c.stop())
        self.assertFalse(c.is_running())
        self.assertFalse(c.stop())  # stopping twice is harmless
        result = run_cli('--base', self.base, 'status')
        self.assertEqual(result.returncode, 3)
        self.assertIn('stopped', result.stdout)
        started = time.monotonic()
        c.start()
        warm = time.monotonic() - started
        self.assertLess(warm, 2.0)
        self.assertTrue(c.is_running())
        self.assertEqual(c.port, port)
        self.assertAnswers(c)

    def test_restart_keeps_port_and_drops_sessions(self):
        c = self.cluster
        for mode in ('fast', 'immediate'):
            port, pid = c.port, c.pid
            conn = connect(c)
            c.restart(mode)
            self.assertNotEqual(c.pid, pid)
            self.assertEqual(c.port, port)
            with self.assertRaises(psycopg2.OperationalError):
                conn.cursor().execute('SELECT 1')
            conn.close()
            self.assertAnswers(c)

    def test_stale_pid_file_is_recovered(self):
        c = self.cluster
        pid = c.kill(signal.SIGKILL)
        wait_gone(pid)
        pidfile = os.path.join(c.datadir, 'postmaster.pid')
        self.assertTrue(os.path.exists(pidfile))  # left behind
        self.assertFalse(c.is_running())
        result = run_cli('--base', self.base, 'start')
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertTrue(c.is_running())
        self.assertNotEqual(c.pid, pid)
        self.assertAnswers(c)

    def test_pid_file_naming_another_process(self):
        # The pid in a stale file now belongs to some unrelated process.
        c = self.cluster
        c.stop('immediate')
        sleeper = subprocess.Popen(['sleep', '30'])
        try:
            with open(os.path.join(c.datadir, 'postmaster.pid'), 'w') as f:
                f.write('%d\n%s\n0\n%s\n' % (sleeper.pid, c.datadir, c.port))
            c.start()
            self.assertTrue(c.is_running())
            self.assertNotEqual(c.pid, sleeper.pid)
            self.assertAnswers(c)
        finally:
            sleeper.kill()
            sleeper.wait()

    def test_port_in_use_picks_another(self):
        c = self.cluster
        c.stop()
        old = c.port
        squatter = socket.socket()
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(('127.0.0.1', old))
        squatter.listen(1)
        try:
            result = run_cli('--base', self.base, 'start')
            self.assertEqual(result.returncode, 0, result.stderr)
            fresh = Cluster(self.base)
            self.assertNotEqual(fresh.port, old)
            self.assertIn('127.0.0.1:%s' % fresh.port, result.stdout)
            self.assertAnswers(fresh)
        finally:
            squatter.close()

    def test_external_server_from_environment(self):
        # PG* naming a server other than the shared cluster: use it as it
        # is, never start or stop it.
        other = self.cluster
        saved = dict(os.environ)
        try:
            os.environ['PGHOST'] = '127.0.0.1'
            os.environ['PGPORT'] = str(other.port)
            os.environ['PGUSER'] = 'launchpad'
            found = ensure_cluster()
            self.assertIsInstance(found, ExternalServer)
            self.assertEqual((found.host, found.port, found.superuser),
                             ('127.0.0.1', other.port, 'launchpad'))
            self.assertIsNone(found.datadir)
            self.assertTrue(found.is_running())
            self.assertEqual(query(found, 'SELECT current_user'), 'launchpad')
            self.assertRaises(ExternalServerError, found.start)
            self.assertRaises(ExternalServerError, found.stop)
            self.assertRaises(ExternalServerError, found.restart)
            for command in ('start', 'stop'):
                result = run_cli(command, env=cli_env())
                self.assertEqual(result.returncode, 1)
                self.assertEqual(len(result.stderr.splitlines()), 1)
                self.assertIn('existing server (127.0.0.1:%s)' % other.port,
                              result.stderr)
            result = run_cli('env', env=cli_env())
            self.assertIn('export PGPORT=%s' % other.port, result.stdout)
        finally:
            os.environ.clear()
            os.environ.update(saved)
        self.assertTrue(other.is_running())

    def test_cold_start_time(self):
        # initdb plus first start; generous, machines vary.
        self.assertLess(ThrowawayClusterLayer.cold_start_seconds, 30)
