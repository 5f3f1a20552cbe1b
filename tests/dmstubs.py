"""Stand-ins for the data manager's collaborators (see test_datamanager).

They record what the data manager asks of them and fail where a test says;
nothing here talks to a database.
"""

from unittest import mock

import psycopg2
import psycopg2.extensions

from canonical.database.interfaces import DisconnectionError

LOST = 'server closed the connection unexpectedly'


class DummyConfig:
    def __init__(self, resolve_commit_outcome=False):
        self.resolve_commit_outcome = resolve_commit_outcome

    def describe(self):
        return 'host=h dbname=d'


class DummyRaw:
    """What the data manager calls on a psycopg2 connection; ``fail`` maps
    a method name to the error it raises."""

    def __init__(self, fail=None, status=psycopg2.extensions.STATUS_BEGIN):
        self.fail = fail or {}
        self.calls = []
        self.closed = 0
        self.status = status
        self.info = mock.Mock(backend_pid=4242)

    def _call(self, name):
        self.calls.append(name)
        if name in self.fail:
            raise self.fail[name]

    def tpc_prepare(self):
        self._call('tpc_prepare')

    def tpc_commit(self):
        self._call('tpc_commit')

    def tpc_rollback(self):
        self._call('tpc_rollback')

    def rollback(self):
        self._call('rollback')


class DummyDb:
    """The IDatabaseConnection side; ``discard`` forgets ``raw`` as the
    real one does."""

    def __init__(self, raw=None, autocommit=False, resolve=False,
                 death=None):
        self.raw = raw if raw is not None else DummyRaw()
        self.autocommit = autocommit
        self.config = DummyConfig(resolve)
        self.death = death
        self.begun = []
        self.executed = []
        self.discarded = []

    def begin(self, gid):
        self.begun.append(gid)

    def death_reason(self):
        return self.death

    def discard(self, reason):
        self.discarded.append(reason)
        self.raw = None

    def lost_in_transaction(self, error):
        return DisconnectionError('lost: %s' % error)

    def execute(self, query, params=None):
        self.executed.append(query)


class DummyCache:
    def __init__(self, caches):
        self.caches = caches
        self.cleared = 0

    def clear(self):
        self.cleared += 1

    def allSubCachesByClassNames(self):
        return self.caches


class DummySQLConnection:
    def __init__(self, caches=None):
        self.cache = DummyCache(caches or {})
        self.expired = 0

    def expireAll(self):
        self.expired += 1


class DummyTransaction:
    """Keeps its resources where the data manager looks: ``others`` data
    managers joined before it."""

    def __init__(self, others=0):
        self._resources = [object() for i in range(others)]

    def join(self, resource):
        self._resources.append(resource)


class OpaqueTransaction:
    """A transaction that does not show who joined."""

    def join(self, resource):
        pass
