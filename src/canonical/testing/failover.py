"""The kit of the failover tests: a test case that installs a job's
transaction manager on a list of servers and checks what events cost.

``FailoverTestCase`` (a ServersTestCase) gives ``install(*servers)``, which
installs the manager with resolve_commit_outcome on a host list naming the
servers in order, ``writer(ztm)`` (a running UnitWriter, stopped however
the test ends), and the assertions ``assertCostAtMost`` (failed attempts,
by kind) and ``assertAllOn`` (every unit the job saw committed is on that
server).
"""

from __future__ import annotations

from typing import Any, List

import transaction
from transaction.interfaces import TransientError

from canonical.testing.logcapture import LogCapture
from canonical.testing.servers import ServersTestCase
from canonical.testing.writer import UnitWriter
from canonical.database.interfaces import CommitOutcomeUnknownError
from canonical.database.interfaces import IZopelessTransactionManager
from canonical.lp import initZopeless

__all__ = ['FailoverTestCase', 'dbhost', 'rows']


def dbhost(*servers: Any, **libpq: Any) -> str:
    """A dbhost naming ``servers`` in order, as users write it."""
    text = '%s port=%s' % (','.join(s.host for s in servers),
                           ','.join(str(s.port) for s in servers))
    for key, value in libpq.items():
        text += ' %s=%s' % (key, value)
    return text


def rows(server: Any, sql: str) -> List[str]:
    """The values psql prints for ``sql`` in the test database."""
    return server.psql(sql, dbname='launchpad_ftest').split()


class FailoverTestCase(ServersTestCase):
    """See the module docstring; ``self.log`` captures the library's log."""

    def setUp(self) -> None:
        super().setUp()
        self.log = LogCapture('canonical.database')
        self.addCleanup(self.log.uninstall)

    def install(self, *servers: Any, libpq: Any = None,
                **options: Any) -> IZopelessTransactionManager:
        # Exact outcomes, as a job that must not lose or repeat a unit
        # across a failover runs.
        settings = dict(dbname='launchpad_ftest', dbuser='launchpad',
                        implicitBegin=False, resolve_commit_outcome=True)
        settings.update(options)
        ztm = initZopeless(dbhost=dbhost(*servers, **(libpq or {})),
                           **settings)
        self.addCleanup(self.uninstall, ztm)
        return ztm

    @staticmethod
    def uninstall(ztm: IZopelessTransactionManager) -> None:
        ztm.uninstall()
        transaction.manager.explicit = False

    def writer(self, ztm: IZopelessTransactionManager,
               **kw: Any) -> UnitWriter:
        writer = UnitWriter(ztm, **kw)
        writer.start()
        self.addCleanup(writer.stop)
        return writer

    def assertAllOn(self, server: Any, writer: UnitWriter,
                    unknown: int = 0) -> None:
        """Every unit the writer saw committed is on ``server``, once; at
        most ``unknown`` units ended with their outcome unknown."""
        writer.stop()
        found = set(rows(server, 'SELECT uid FROM ha_unit'))
        missing = [c.uid for c in writer.committed if c.uid not in found]
        self.assertEqual(missing, [])
        self.assertLessEqual(len(writer.failed), unknown, writer.failed)
        for error in writer.failed:
            self.assertIsInstance(error, CommitOutcomeUnknownError)

    def assertCostAtMost(self, writer: UnitWriter, count: int,
                         *kinds: type) -> None:
        """At most ``count`` failed attempts, each one of ``kinds``
        (default: TransientError)."""
        self.assertLessEqual(len(writer.errors), count, writer.errors)
        for error in writer.errors:
            self.assertIsInstance(error, kinds or (TransientError,))
