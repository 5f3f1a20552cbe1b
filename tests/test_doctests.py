"""Run the narrative doctests in this directory against the real cluster.

Each doctest runs in a fresh copy of the sample database and in a
temporary working directory (the reconnect story leaves twistd's pid and
log files there).
"""

import doctest
import glob
import os
import shutil
import tempfile
import unittest

from zope.testing.cleanup import cleanUp

from canonical.testing.servers import ReplicationLayer
from canonical.launchpad.ftests.harness import LaunchpadTestSetup
from canonical.testing.layers import DatabaseLayer

HERE = os.path.dirname(os.path.abspath(__file__))

FLAGS = (doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE |
         doctest.REPORT_NDIFF)


def setUp(test):
    LaunchpadTestSetup().setUp()
    test.globs['_old_cwd'] = os.getcwd()
    test.globs['_tmpdir'] = tempfile.mkdtemp(prefix='zopeless-doctest-')
    os.chdir(test.globs['_tmpdir'])


def tearDown(test):
    os.chdir(test.globs['_old_cwd'])
    shutil.rmtree(test.globs['_tmpdir'], ignore_errors=True)
    cleanUp()  # a failed story must not poison the next one
    LaunchpadTestSetup().tearDown()


def setUpServers(test):
    test.globs['_old_cwd'] = os.getcwd()


def tearDownServers(test):
    os.chdir(test.globs['_old_cwd'])
    servers = test.globs.get('servers')
    if servers is not None:
        servers.close()  # a failed story leaves no server running
    cleanUp()


# Stories that make servers of their own rather than use the shared one.
OWN_SERVERS = ('failover.txt', 'read-replicas.txt')


def test_suite():
    suite = unittest.TestSuite()
    for path in sorted(glob.glob(os.path.join(HERE, '*.txt'))):
        name = os.path.basename(path)
        own = name in OWN_SERVERS
        test = doctest.DocFileSuite(
            name, setUp=setUpServers if own else setUp,
            tearDown=tearDownServers if own else tearDown,
            optionflags=FLAGS, encoding='utf-8')
        test.layer = ReplicationLayer if own else DatabaseLayer
        suite.addTest(test)
    return suite
