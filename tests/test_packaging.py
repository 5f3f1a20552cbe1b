"""The library as installed and the commands the README shows.

- site_zcml_path() finds the site ZCML in its documented order, and the
  library's own file registers what initZopeless() needs;
- the version the package reports is the distribution's;
- ``bin/python`` is the real interpreter: the README's cluster commands
  work exactly as written, options after ``-m <module>`` included;
- a benchmark run stops the server it started.

The commands run against a throwaway cluster in a temporary directory, so
the shared cluster of the test run is never disturbed.
"""

import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
import tempfile
import unittest

from zope.configuration import xmlconfig

import canonical.lp
from canonical.testing.cluster import Cluster
from canonical.database.interfaces import IZopelessTransactionManager
from canonical.lp import site_zcml_path
from canonical.lp.version import __version__

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LP_DIR = os.path.dirname(os.path.abspath(canonical.lp.__file__))
BIN_PYTHON = os.path.join(ROOT, 'bin', 'python')


class SiteZcmlTests(unittest.TestCase):

    def setUp(self):
        self.saved = os.environ.pop('ZOPELESS_SITE_ZCML', None)
        self.tmp = tempfile.mkdtemp(prefix='zopeless-zcml-')

    def tearDown(self):
        shutil.rmtree(self.tmp)
        os.environ.pop('ZOPELESS_SITE_ZCML', None)
        if self.saved is not None:
            os.environ['ZOPELESS_SITE_ZCML'] = self.saved

    def copy_of_canonical_lp(self, checkout):
        """canonical/lp/__init__.py loaded from a copy below `checkout`."""
        lp = os.path.join(checkout, 'src', 'canonical', 'lp')
        os.makedirs(lp)
        for name in ('__init__.py', 'script.zcml'):
            shutil.copy(os.path.join(LP_DIR, name), lp)
        spec = importlib.util.spec_from_file_location(
            'zopeless_lp_copy', os.path.join(lp, '__init__.py'))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module, lp

    def test_the_environment_variable_comes_first(self):
        os.environ['ZOPELESS_SITE_ZCML'] = '/etc/zopeless/site.zcml'
        self.assertEqual(site_zcml_path(), '/etc/zopeless/site.zcml')

    def test_a_checkout_uses_its_zcml_directory(self):
        self.assertEqual(site_zcml_path(),
                         os.path.join(ROOT, 'zcml', 'script.zcml'))

    def test_an_installed_copy_uses_its_own_file(self):
        # No setup.py and no zcml/ above the package, as in site-packages.
        module, lp = self.copy_of_canonical_lp(self.tmp)
        self.assertEqual(module.site_zcml_path(),
                         os.path.join(lp, 'script.zcml'))

    def test_a_checkout_without_a_site_file_uses_the_package_file(self):
        open(os.path.join(self.tmp, 'setup.py'), 'w').close()
        module, lp = self.copy_of_canonical_lp(self.tmp)
        self.assertEqual(module.site_zcml_path(),
                         os.path.join(lp, 'script.zcml'))

    def registered_adapters(self, path):
        context = xmlconfig.file(path, execute=False)
        return [action['discriminator'][2] for action in context.actions
                if action['discriminator'] and
                action['discriminator'][0] == 'adapter']

    def test_the_package_file_registers_the_manager(self):
        provided = self.registered_adapters(os.path.join(LP_DIR,
                                                         'script.zcml'))
        self.assertIn(IZopelessTransactionManager, provided)

    def test_the_checkout_file_includes_the_package_file(self):
        provided = self.registered_adapters(
            os.path.join(ROOT, 'zcml', 'script.zcml'))
        self.assertIn(IZopelessTransactionManager, provided)


class VersionTests(unittest.TestCase):

    def test_the_distribution_reports_the_package_version(self):
        self.assertEqual(importlib.metadata.version('zopeless'), __version__)

    def test_changes_has_an_entry_for_the_version(self):
        release = re.match(r'\d+(\.\d+)*', __version__).group(0)
        with open(os.path.join(ROOT, 'CHANGES.rst')) as f:
            self.assertIn('\n%s (' % release, f.read())


def throwaway_env(base):
    """The caller's environment, with the cluster state under base and no
    other server named."""
    env = dict(os.environ, ZOPELESS_VAR=base)
    for name in ('PGHOST', 'PGPORT', 'PYTHONPATH'):
        env.pop(name, None)
    return env


class ThrowawayStateLayer:
    """A cluster state directory of its own, destroyed at the end."""

    base = None

    @classmethod
    def setUp(cls):
        if not os.access(BIN_PYTHON, os.X_OK):
            raise AssertionError('%s is missing: run "make test" (or '
                                 'scripts/setup.sh) first' % BIN_PYTHON)
        cls.base = tempfile.mkdtemp(prefix='zopeless-commands-')

    @classmethod
    def tearDown(cls):
        Cluster(cls.base).destroy()
        shutil.rmtree(cls.base, ignore_errors=True)
        cls.base = None

    @classmethod
    def testSetUp(cls):
        pass

    @classmethod
    def testTearDown(cls):
        pass


class CommandTests(unittest.TestCase):
    """bin/python and bin/bench's cluster, on one throwaway cluster."""

    layer = ThrowawayStateLayer

    @property
    def base(self):
        return ThrowawayStateLayer.base

    def bin_python(self, *args):
        return subprocess.run([BIN_PYTHON] + list(args), capture_output=True,
                              text=True, env=throwaway_env(self.base),
                              cwd=ROOT, timeout=120)

    def readme_command(self, command):
        """One of the README's cluster commands, exactly as written."""
        return self.bin_python(*command.split()[1:])

    def test_module_options_reach_the_module(self):
        result = self.bin_python('-m', 'canonical.testing.cluster', '--help')
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn('--mode {smart,fast,immediate}', result.stdout)
        result = self.bin_python('-c', 'import sys; print(sys.argv[1:])',
                                 'a', '--b')
        self.assertEqual(result.stdout, "['a', '--b']\n", result.stderr)

    def test_readme_cluster_commands(self):
        started = self.readme_command(
            'bin/python -m canonical.testing.cluster start')
        self.assertEqual(started.returncode, 0, started.stderr)
        cluster = Cluster(self.base)
        self.assertIn('cluster running on 127.0.0.1:%s' % cluster.port,
                      started.stdout)
        status = self.readme_command(
            'bin/python -m canonical.testing.cluster status')
        self.assertEqual(status.returncode, 0, status.stderr)
        self.assertIn('running on 127.0.0.1:%s pid %s'
                      % (cluster.port, cluster.pid), status.stdout)
        env = self.readme_command('bin/python -m canonical.testing.cluster env')
        self.assertEqual(env.stdout.splitlines()[:2], [
            'export PGHOST=127.0.0.1', 'export PGPORT=%s' % cluster.port])
        stopped = self.readme_command(
            'bin/python -m canonical.testing.cluster stop --mode fast')
        self.assertEqual((stopped.returncode, stopped.stdout),
                         (0, 'cluster stopped\n'), stopped.stderr)
        self.assertFalse(cluster.is_running())
        status = self.readme_command(
            'bin/python -m canonical.testing.cluster status')
        self.assertEqual(status.returncode, 3, status.stdout)

    def test_a_benchmark_run_stops_the_server_it_started(self):
        from benchmarks.env import BenchCluster
        cluster = Cluster(self.base)
        cluster.stop()
        with BenchCluster(base=self.base) as bench:
            self.assertTrue(bench.cluster.is_running())
        self.assertFalse(cluster.is_running())
        # A server it found running is not its to stop.
        cluster.start()
        with BenchCluster(base=self.base):
            pass
        self.assertTrue(cluster.is_running())
        cluster.stop()
