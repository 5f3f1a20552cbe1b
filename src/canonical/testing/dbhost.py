"""Where the test database server is (the seed imports these as
``canonical.database.ftests.getDBHost`` and ``getDBPort``).

``getDBHost()`` and ``getDBPort()`` name the server the functional tests
use: the one PGHOST/PGPORT name when they are set, otherwise the private
cluster of ``canonical.testing.cluster`` (started if needed).
"""

import os

from canonical.testing.cluster import ensure_cluster
from canonical.testing.cluster.layout import HOST

__all__ = ['getDBHost', 'getDBPort']


def getDBHost():
    """The test server's host: PGHOST if set, else the cluster's address."""
    return os.environ.get('PGHOST') or HOST


def getDBPort():
    """The test server's port: PGPORT if set, else the cluster's port."""
    port = os.environ.get('PGPORT')
    if port:
        return int(port)
    return int(ensure_cluster().port)
