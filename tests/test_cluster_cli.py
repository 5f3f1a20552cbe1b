"""The private cluster's command line (canonical.testing.cluster) when
things go wrong (one line on stderr, exit status 1), and run by an
ordinary user.  The cluster itself is tested in test_cluster.py."""

import json
import os
import pwd
import shutil
import sys
import tempfile
import unittest

from canonical.testing import cluster as cluster_mod
from canonical.testing.cluster import Cluster
from test_cluster import cli_env
from test_cluster import make_tempdir
from test_cluster import process_uid
from test_cluster import query
from test_cluster import run_cli


class ClusterErrorTests(unittest.TestCase):
    """Expected failures give one line on stderr and exit status 1."""

    def setUp(self):
        self.tmp = make_tempdir('zopeless-cluster-error-')
        self.base = os.path.join(self.tmp, 'var')

    def tearDown(self):
        Cluster(self.base).destroy()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def assertOneLineError(self, result, text):
        self.assertEqual(result.returncode, 1)
        self.assertEqual(result.stdout, '')
        self.assertNotIn('Traceback', result.stderr)
        lines = result.stderr.splitlines()
        self.assertEqual(len(lines), 1, result.stderr)
        self.assertTrue(lines[0].startswith('cluster: error: '), lines[0])
        self.assertIn(text, lines[0])

    def test_missing_binaries(self):
        result = run_cli('--base', self.base, 'start', env=cli_env(
            ZOPELESS_PG_BINDIR=os.path.join(self.tmp, 'nowhere')))
        self.assertOneLineError(result, 'PostgreSQL server binaries not found')
        self.assertIn('postgresql', result.stderr)

    def test_missing_binaries_api(self):
        os.environ['ZOPELESS_PG_BINDIR'] = os.path.join(self.tmp, 'nowhere')
        try:
            with self.assertRaises(cluster_mod.BinariesNotFound):
                Cluster(self.base).start()
        finally:
            del os.environ['ZOPELESS_PG_BINDIR']

    def test_failed_initdb(self):
        bindir = os.path.join(self.tmp, 'fakebin')
        os.makedirs(bindir)
        os.chmod(self.tmp, 0o755)
        scripts = {
            'initdb': 'echo "initdb: error: simulated failure" >&2; exit 1',
            'pg_ctl': 'exit 1',
            'postgres': 'echo "postgres (PostgreSQL) 15.0"',
        }
        for name, body in scripts.items():
            path = os.path.join(bindir, name)
            with open(path, 'w') as f:
                f.write('#!/bin/sh\n%s\n' % body)
            os.chmod(path, 0o755)
        result = run_cli('--base', self.base, 'start',
                         env=cli_env(ZOPELESS_PG_BINDIR=bindir))
        self.assertOneLineError(
            result, 'initdb failed: initdb: error: simulated failure')
        self.assertFalse(Cluster(self.base).is_initialised())

    def test_full_disk(self):
        result = run_cli('--base', self.base, 'start', env=cli_env(
            ZOPELESS_PG_MIN_FREE_MB=str(2 ** 40)))
        self.assertOneLineError(result, 'disk full')

    def test_bad_command(self):
        result = run_cli('explode')
        self.assertEqual(result.returncode, 2)
        self.assertNotIn('Traceback', result.stderr)


class OrdinaryUserTests(unittest.TestCase):
    """The cluster run by an ordinary (non-root) user.

    As root, the command line is run in a child process that has switched
    to the unprivileged server user; otherwise it runs as ourselves.
    """

    def setUp(self):
        self.tmp = make_tempdir('zopeless-cluster-user-')
        self.base = os.path.join(self.tmp, 'var')
        self.ids = None
        if os.geteuid() == 0:
            pw = pwd.getpwnam(Cluster(self.base)._choose_runas())
            self.ids = (pw.pw_uid, pw.pw_gid)
            os.chown(self.tmp, pw.pw_uid, pw.pw_gid)
            self.uid = pw.pw_uid
        else:
            self.uid = os.geteuid()

    def tearDown(self):
        try:
            Cluster(self.base).stop('immediate')
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def run_cluster(self, *args):
        """Run the command line in a child process; (status, out, err)."""
        with tempfile.TemporaryFile('w+') as out, \
                tempfile.TemporaryFile('w+') as err:
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:  # the child
                status = 70
                try:
                    os.dup2(out.fileno(), 1)
                    os.dup2(err.fileno(), 2)
                    if self.ids is not None:
                        os.setgroups([])
                        os.setgid(self.ids[1])
                        os.setuid(self.ids[0])
                    for key in list(os.environ):
                        if key.startswith('PG'):
                            del os.environ[key]
                    os.chdir(self.tmp)
                    sys.stdout = os.fdopen(1, 'w')
                    sys.stderr = os.fdopen(2, 'w')
                    status = cluster_mod.main(['--base', self.base]
                                              + list(args))
                    sys.stdout.flush()
                    sys.stderr.flush()
                except BaseException as e:
                    os.write(2, ('child failed: %r\n' % (e,)).encode())
                finally:
                    os._exit(status or 0)
            _, status = os.waitpid(pid, 0)
            out.seek(0)
            err.seek(0)
            return os.waitstatus_to_exitcode(status), out.read(), err.read()

    def test_start_status_env_stop(self):
        status, out, err = self.run_cluster('start')
        self.assertEqual(status, 0, err)
        with open(os.path.join(self.base, 'cluster.json')) as f:
            state = json.load(f)
        self.assertIsNone(state['runas'])
        self.assertEqual(state['area'], os.path.join(self.base, 'pg'))
        c = Cluster(self.base)
        self.assertEqual(process_uid(c.pid), self.uid)
        self.assertEqual(os.stat(c.datadir).st_uid, self.uid)
        self.assertEqual(query(c, 'SELECT current_user', user='launchpad'),
                         'launchpad')
        status, out, err = self.run_cluster('env')
        self.assertIn('export PGPORT=%s' % c.port, out)
        status, out, err = self.run_cluster('status')
        self.assertEqual(status, 0, err)
        self.assertIn('running on 127.0.0.1:%s' % c.port, out)
        status, out, err = self.run_cluster('stop')
        self.assertEqual((status, out), (0, 'cluster stopped\n'), err)
        self.assertFalse(Cluster(self.base).is_running())
