"""A nightly cron job that survives losing its database mid-run.

``KarmaCronScript`` is a cron script built on canonical.launchpad.scripts:
run through ``lock_and_run()``, it awards karma to every person of the
sample database with a ``TunableLoop`` (``AwardKarma``), one transaction
per chunk, whose chunk sizes a ``DBLoopTuner`` adapts so each chunk takes
about half a second.  It holds a lock (a second run at the same time exits
with status 1), stops cleanly on SIGTERM or Ctrl-C, and offers --dry-run.

The demo around it makes a fresh copy of the sample database and reaches
it through Twisted's port forwarder.  Half-way through the third chunk the
forwarder is killed, cutting the connection under the chunk's open
transaction, and started again two seconds later.  The chunk is rolled
back and run again once the database is back; the summary at the end is
checked against the database: every person awarded exactly once.

    bin/python scripts/demo.py            # progress and the summary
    bin/python scripts/demo.py -v         # and every decision of the tuner
    bin/python scripts/demo.py --dry-run  # every commit rolled back
"""

import signal
import sys
import tempfile
import threading

from zope.interface import implementer

from canonical.testing.cluster import ClusterError
from canonical.testing.cluster import ensure_cluster
from canonical.testing.proxy import PortForwarder
from canonical.launchpad.database import Person
from canonical.launchpad.ftests.harness import LaunchpadTestSetup
from canonical.launchpad.scripts import LaunchpadCronScript
from canonical.launchpad.scripts import LaunchpadScriptFailure
from canonical.launchpad.scripts import ITunableLoopItems
from canonical.launchpad.scripts import TunableLoop

AWARD = 10
WORK_SECONDS = 0.02     # per person: a pg_sleep stands in for real work
CUT_IN_CHUNK = 3
OUTAGE_SECONDS = 2.0


@implementer(ITunableLoopItems)
class AwardKarma(TunableLoop):
    """Award karma to ``people`` (ids), about goal_seconds per chunk.

    The position moves on only once a chunk committed: a chunk cut off by a
    lost connection is run again, so nobody is skipped or awarded twice.
    """

    goal_seconds = 0.5
    maximum_chunk_size = 100

    def __init__(self, log, txn, people, in_chunk=None):
        super().__init__(log)
        self.txn = txn
        self.people = people
        self.position = 0
        self.chunks = 0
        self.in_chunk = in_chunk  # called after each person, for the demo

    def isDone(self):
        return self.position >= len(self.people)

    def estimateRemaining(self):
        return len(self.people) - self.position

    def __call__(self, chunk_size):
        batch = self.people[self.position:self.position + chunk_size]
        self.txn.begin()
        db = self.txn.connection()
        for index, person_id in enumerate(batch):
            person = Person.get(person_id)
            person.karma = person.karma + AWARD
            db.execute('INSERT INTO karma_award (person, chunk) '
                       'VALUES (%s, %s)', (person_id, self.chunks + 1))
            db.execute('SELECT pg_sleep(%s)', (WORK_SECONDS,))
            if self.in_chunk is not None:
                self.in_chunk(self.chunks + 1, index, len(batch))
        self.txn.commit()
        self.position += len(batch)
        self.chunks += 1

    @property
    def items_done(self):
        return self.position   # moves on only once a chunk committed


class KarmaCronScript(LaunchpadCronScript):
    """Award karma to everybody, and check the result."""

    description = 'Award %d karma to every person, once.' % AWARD
    supports_dry_run = True
    database_settings = {'resolve_commit_outcome': True}
    log_stream = sys.stdout
    in_chunk = None

    def totals(self):
        self.txn.begin()
        people = [p.id for p in Person.select(orderBy='id')]
        karma = sum(p.karma for p in Person.select())
        rows, distinct = self.txn.connection().execute(
            'SELECT count(*), count(DISTINCT person) FROM karma_award'
        ).fetchone()
        self.txn.abort()
        return people, karma, rows, distinct

    def main(self):
        people, karma_before, rows_before, _ = self.totals()
        self.logger.info('Awarding karma to %d people through %s.',
                         len(people), self.txn.config.describe())
        loop = AwardKarma(self.logger, self.txn, people, self.in_chunk)
        stats = loop.run()
        self.items_processed = stats.items   # for --metrics-dir
        _, karma_after, rows, distinct = self.totals()
        expected = 0 if self.is_dry_run else len(people)
        exactly_once = (rows - rows_before == distinct == expected and
                        karma_after - karma_before == AWARD * expected)
        print()
        print('Summary (checked against the database)')
        print('  people                %d' % len(people))
        print('  awards in database    %d (%d distinct people, expected %d)'
              % (rows - rows_before, distinct, expected))
        print('  karma awarded         %d (expected %d)'
              % (karma_after - karma_before, AWARD * expected))
        print('  chunks                %d, sizes %s'
              % (stats.chunks, ' '.join(map(str, stats.chunk_sizes))))
        print('  chunks run again      %d' % stats.retries)
        print('  database downtime     %.2f s' % stats.downtime)
        print('  loop took             %.2f s' % stats.elapsed)
        print('  exactly once          %s%s' % (
            'yes' if exactly_once else 'NO',
            ' (a dry run: nothing kept)' if self.is_dry_run else ''))
        print()
        if not exactly_once:
            raise LaunchpadScriptFailure('The awards do not add up.')


def cut_the_link(proxy):
    """The demo's outage: kill the forwarder half-way through a chunk."""
    cut = []

    def in_chunk(chunk, index, size):
        if chunk == CUT_IN_CHUNK and index == size // 2 and not cut:
            cut.append(chunk)
            proxy.stop(signal.SIGKILL)
            print('>>> database link cut (port forwarder killed) in chunk '
                  '%d; back in %.0f s' % (chunk, OUTAGE_SECONDS), flush=True)
            threading.Timer(OUTAGE_SECONDS, restart, (proxy,)).start()
    return in_chunk


def restart(proxy):
    proxy.start()
    print('>>> port forwarder running again', flush=True)


def main():
    try:
        server = ensure_cluster()
    except ClusterError as e:
        print('demo: %s' % e, file=sys.stderr)
        return 1
    setup = LaunchpadTestSetup(dbname='launchpad_demo')
    setup.setUp()
    conn = setup.connect()
    conn.cursor().execute(
        'CREATE TABLE karma_award (id serial PRIMARY KEY, person integer '
        'NOT NULL REFERENCES person, chunk integer NOT NULL)')
    conn.commit()
    proxy = PortForwarder(server.host, server.port,
                          directory=tempfile.mkdtemp(prefix='zopeless-demo-'))
    proxy.start()
    script = KarmaCronScript(
        'karma-demo', dbuser=setup.dbuser, test_args=[
            '--dbname', 'launchpad_demo',
            '--dbhost', '127.0.0.1 port=%d' % proxy.port] + sys.argv[1:])
    script.in_chunk = cut_the_link(proxy)
    try:
        return script.run_with_status(implicitBegin=False)
    finally:
        proxy.stop()
        setup.tearDown()


if __name__ == '__main__':
    sys.exit(main())
