"""Stand-ins for the data manager's collaborators (see test_datamanager).

They record what the data manager asks of them and fail where a test says;
nothing here talks to a database.
"""

from canonical.database.interfaces import DisconnectionError

LOST = 'server closed the connection unexpectedly'

# The identity of the server a DummyDb is connected to.
SERVER = object()


class DummyOutcomes:
    """The ICommitOutcomes side: slots held while a commit settles."""

    def __init__(self):
        self.held = []

    def hold(self, slot):
        self.held.append(slot)

    def release(self, slot):
        self.held.remove(slot)


class DummyPrepared:
    """The IPreparedTransactions side: decisions remembered."""

    def __init__(self):
        self.decided = {}

    def decide(self, gid, commit):
        self.decided[gid] = commit


class DummyConfig:
    writes = True  # a writer's (a read unit's commits in one phase)

    def __init__(self, resolve_commit_outcome=False):
        self.resolve_commit_outcome = resolve_commit_outcome

    def describe(self):
        return 'host=h dbname=d'


class DummyDb:
    """The IDatabaseConnection side: it records the transaction control the
    data manager asks for (``calls``) and raises where ``fail`` says (a
    method name -> the error).  ``sent`` False stands for a transaction
    that sent no statement: prepare() then has nothing to prepare.
    ``discard`` forgets the connection as the real one does."""

    def __init__(self, fail=None, autocommit=False, resolve=False,
                 sent=True):
        self.fail = fail or {}
        self.calls = []
        self.autocommit = autocommit
        self.config = DummyConfig(resolve)
        self.sent = sent
        self.backend_pid = 4242
        self.begun = 0
        self.prepared_gids = []
        self.executed = []
        self.discarded = []
        self.server = SERVER
        self.outcome_slot = self.outcome_token = None
        self.outcomes = DummyOutcomes()
        self.prepared = DummyPrepared()

    def _call(self, name):
        self.calls.append(name)
        if name in self.fail:
            raise self.fail[name]

    def begin(self):
        self.begun += 1

    def commit(self):
        self._call('commit')

    def prepare(self, gid):
        self.prepared_gids.append(gid)
        self._call('prepare')
        return self.sent

    def finish_prepared(self, gid, commit):
        self._call('commit prepared' if commit else 'rollback prepared')

    def rollback(self):
        self._call('rollback')

    def is_disconnect(self, error):
        return LOST in str(error)

    def discard(self, reason):
        self.discarded.append(reason)
        self.backend_pid = None

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
