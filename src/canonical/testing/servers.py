"""Throwaway primaries, standbys, PgBouncers and network hosts for tests.

``ReplicationLayer`` builds, once per test run, a stopped seed node holding
the sample database.  Each test then makes the servers it needs with a
``Servers`` (primaries are copies of the seed, standbys base backups of a
primary) and calls ``close()`` (best in ``addCleanup``), which stops and
deletes them all, network namespaces included, whatever the test did.

Every node's area carries the pid of the test process that made it
(``OWNER_FILE``): a run that was killed cannot clean up, so the next one
stops and deletes what such a run left, and nothing else.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import tempfile
import unittest
from typing import List, Optional

from zope.testing.cleanup import cleanUp

from canonical.testing.cluster.interfaces import ClusterError
from canonical.testing.cluster.interfaces import INetworkHost
from canonical.testing.cluster.interfaces import IReplicationNode
from canonical.testing.cluster.netns import NetworkHost
from canonical.testing.cluster.pgbouncer import PgBouncer
from canonical.testing.cluster.replication import ReplicationNode
from canonical.testing.writer import HA_TABLE_SQL
from canonical.database.processes import pid_alive
from canonical.launchpad.ftests.harness import LaunchpadTestSetup

__all__ = ['ReplicationLayer', 'Servers', 'ServersTestCase',
           'remove_leftovers', 'OWNER_FILE']

OWNER_FILE = 'zopeless-test-owner'


def _own(node: ReplicationNode) -> None:
    """Mark ``node`` as made by this process (see remove_leftovers)."""
    os.makedirs(node.area, exist_ok=True)
    with open(os.path.join(node.area, OWNER_FILE), 'w') as f:
        f.write('%d\n%s\n' % (os.getpid(), node.base))


def remove_leftovers() -> List[str]:
    """Stop and delete the nodes whose test process died; their areas."""
    removed = []
    for marker in glob.glob(os.path.join('/var/tmp', 'zopeless-*',
                                         OWNER_FILE)):
        try:
            with open(marker) as f:
                pid, base = f.read().split('\n')[:2]
        except (OSError, ValueError):
            continue
        if pid_alive(int(pid)):
            continue
        area = os.path.dirname(marker)
        pidfile = os.path.join(area, 'pgbouncer', 'pgbouncer.pid')
        with contextlib.suppress(OSError, ValueError):
            with open(pidfile) as f:
                os.kill(int(f.read().split()[0]), signal.SIGTERM)
        with contextlib.suppress(ClusterError, OSError):
            ReplicationNode(base).destroy()
        shutil.rmtree(area, ignore_errors=True)
        shutil.rmtree(os.path.dirname(base), ignore_errors=True)
        removed.append(area)
    return removed


class ReplicationLayer:
    """A stopped seed node with the sample database, for Servers."""

    seed: Optional[ReplicationNode] = None
    _tmp: Optional[str] = None

    @classmethod
    def setUp(cls) -> None:
        remove_leftovers()
        cls._tmp = tempfile.mkdtemp(prefix='zopeless-seed-')
        seed = ReplicationNode(os.path.join(cls._tmp, 'seed'), name='seed')
        seed.initialise()
        _own(seed)
        seed.start()
        setup = LaunchpadTestSetup()
        setup.server = seed
        setup.setUp()
        setup.closeConnections()
        seed.psql(HA_TABLE_SQL, dbname=setup.dbname)
        seed.stop('fast')
        cls.seed = seed

    @classmethod
    def tearDown(cls) -> None:
        if cls.seed is not None:
            cls.seed.destroy()
        shutil.rmtree(cls._tmp, ignore_errors=True)
        cls.seed = cls._tmp = None

    @classmethod
    def testSetUp(cls) -> None:
        pass

    @classmethod
    def testTearDown(cls) -> None:
        # As the database layers do: a manager a test installed is gone.
        cleanUp()


class Servers:
    """The servers of one test; see the module docstring."""

    def __init__(self, seed: Optional[ReplicationNode] = None) -> None:
        self.seed = seed if seed is not None else ReplicationLayer.seed
        self.tmp = tempfile.mkdtemp(prefix='zopeless-servers-')
        self.nodes: List[ReplicationNode] = []
        self.hosts: List[NetworkHost] = []
        self.bouncers: List[PgBouncer] = []

    def host(self) -> INetworkHost:
        """A new network namespace: a host of its own."""
        host = NetworkHost()
        self.hosts.append(host)
        return host.create()

    def primary(self, name: str = 'n1',
                netns: Optional[INetworkHost] = None) -> IReplicationNode:
        """A running primary holding the sample database."""
        node = ReplicationNode(os.path.join(self.tmp, name), name=name,
                               netns=netns)
        self.nodes.append(node)
        node.initialise_from(self.seed)
        _own(node)
        return node.start()

    def standby(self, primary: IReplicationNode, name: str,
                synchronous: bool = False,
                netns: Optional[INetworkHost] = None) -> IReplicationNode:
        """A running streaming standby of ``primary``."""
        base = os.path.join(self.tmp, name)
        try:
            node = primary.make_standby(base, name=name,
                                        synchronous=synchronous, netns=netns)
        finally:
            # Whatever happened, close() must find what was made.
            made = ReplicationNode(base)
            self.nodes.append(made)
            if made.is_initialised():
                _own(made)
        return node

    def bouncer(self, server: IReplicationNode, **settings) -> PgBouncer:
        """A running PgBouncer in front of ``server``."""
        bouncer = PgBouncer(server, os.path.join(server.area, 'pgbouncer'),
                            **settings)
        self.bouncers.append(bouncer)
        return bouncer.start()

    def close(self) -> None:
        for bouncer in self.bouncers:
            with contextlib.suppress(ClusterError, OSError):
                bouncer.destroy()
        for node in self.nodes:
            with contextlib.suppress(ClusterError, OSError):
                node.destroy()
        for host in self.hosts:
            host.remove()
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.nodes, self.hosts, self.bouncers = [], [], []


class ServersTestCase(unittest.TestCase):
    """A test with ``self.servers``, closed however the test ends."""

    layer = ReplicationLayer

    def setUp(self) -> None:
        self.servers = Servers()
        self.addCleanup(self.servers.close)
