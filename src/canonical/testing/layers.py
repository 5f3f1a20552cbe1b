"""zope.testrunner layers for tests that need the database.

``DatabaseLayer``
    The database server is up (the private cluster is started once per
    test run) and PGHOST, PGPORT, LP_DBNAME and LP_DBUSER name it and the
    sample database, so library code finds them by default.

``LaunchpadLayer``
    Also a fresh copy of the sample database, ``launchpad_ftest``, for
    every test; it is dropped after the test.  The harness in use is
    ``LaunchpadLayer.harness``.

After each test both run ``zope.testing.cleanup.cleanUp()``: the manager a
test installed is uninstalled, ``transaction`` is back in implicit mode,
the reconnect coordinators are forgotten and the site ZCML is executed
again by the next ``initZopeless()``.
"""

import os

from zope.testing.cleanup import cleanUp

from canonical.testing.cluster import ensure_cluster
from canonical.launchpad.ftests.harness import LaunchpadTestSetup

__all__ = ['DatabaseLayer', 'LaunchpadLayer']

_ENV_VARS = ('PGHOST', 'PGPORT', 'LP_DBNAME', 'LP_DBUSER')


class DatabaseLayer:
    """The database server is running and named by the environment."""

    server = None
    _saved_env = None

    @classmethod
    def setUp(cls):
        DatabaseLayer.server = server = ensure_cluster()
        DatabaseLayer._saved_env = {k: os.environ.get(k) for k in _ENV_VARS}
        os.environ['PGHOST'] = str(server.host)
        os.environ['PGPORT'] = str(server.port)
        os.environ['LP_DBNAME'] = LaunchpadTestSetup.dbname
        os.environ['LP_DBUSER'] = LaunchpadTestSetup.dbuser

    @classmethod
    def tearDown(cls):
        # The cluster keeps running: the next run starts faster.
        saved = DatabaseLayer._saved_env or {}
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        DatabaseLayer._saved_env = None

    @classmethod
    def testSetUp(cls):
        pass

    @classmethod
    def testTearDown(cls):
        cleanUp()


class LaunchpadLayer(DatabaseLayer):
    """A fresh launchpad_ftest database for each test."""

    harness = None

    @classmethod
    def setUp(cls):
        pass

    @classmethod
    def tearDown(cls):
        pass

    @classmethod
    def testSetUp(cls):
        LaunchpadLayer.harness = LaunchpadTestSetup()
        LaunchpadLayer.harness.setUp()

    @classmethod
    def testTearDown(cls):
        cleanUp()  # before the drop: the manager's sessions end first
        harness, LaunchpadLayer.harness = LaunchpadLayer.harness, None
        if harness is not None:
            harness.tearDown()
