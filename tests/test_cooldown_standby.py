"""DBLoopTuner against a real lagging standby: the loop waits while the
standby's replay lags and carries on once it has caught up.

The standby's replay is paused (pg_wal_replay_pause()), so the primary's
pg_stat_replication reports a replay lag that grows until it is resumed.
"""

import logging
import threading

import psycopg2

from canonical.testing.logcapture import LogCapture
from canonical.testing.servers import ServersTestCase
from canonical.testing.waiting import wait_for
from canonical.launchpad.database import Person
from canonical.launchpad.scripts import TunableLoop
from canonical.lp import initZopeless

THRESHOLD = 0.3  # seconds of replay lag that count as strain here


def autocommit(server):
    conn = psycopg2.connect(server.dsn('launchpad_ftest'), connect_timeout=5)
    conn.autocommit = True
    return conn


def karma(conn, ids):
    cursor = conn.cursor()
    cursor.execute('SELECT karma FROM person WHERE id = ANY(%s) ORDER BY id',
                   (list(ids),))
    return [row[0] for row in cursor.fetchall()]


def replay_lag(conn):
    cursor = conn.cursor()
    cursor.execute('SELECT max(EXTRACT(EPOCH FROM replay_lag))::float8 '
                   'FROM pg_stat_replication')
    return cursor.fetchone()[0] or 0.0


class Karma(TunableLoop):
    """Gives people 1 karma each, a person a chunk, each in its own
    transaction."""

    maximum_chunk_size = 1
    tuner_settings = {'replication_lag_seconds': THRESHOLD,
                      'long_transaction_seconds': 3600,
                      'cooldown_poll_seconds': 0.05}

    def __init__(self, ztm, ids, log):
        super().__init__(log)
        self.ztm, self.todo, self.done = ztm, list(ids), []

    def isDone(self):
        return not self.todo

    def __call__(self, chunk_size):
        person_id = self.todo[0]
        self.ztm.begin()
        Person.get(person_id).karma += 1
        self.ztm.commit()
        self.done.append(self.todo.pop(0))
        return 1


class TestCoolDownOnALaggingStandby(ServersTestCase):

    def test_the_loop_waits_for_the_standby_to_catch_up(self):
        primary = self.servers.primary()
        standby = self.servers.standby(primary, 'n2')
        on_primary, on_standby = autocommit(primary), autocommit(standby)
        self.addCleanup(on_primary.close)
        self.addCleanup(on_standby.close)
        on_standby.cursor().execute('SELECT pg_wal_replay_pause()')
        on_primary.cursor().execute(
            'UPDATE person SET karma = karma WHERE id = 1')
        wait_for(lambda: replay_lag(on_primary) > THRESHOLD, 10,
                 'the paused standby to lag')

        before = karma(on_primary, [1, 2, 3])
        ztm = initZopeless(dbname='launchpad_ftest', dbuser='postgres',
                           dbhost='%s port=%d' % (primary.host, primary.port),
                           implicitBegin=False)
        capture = LogCapture('cooldown-test')
        self.addCleanup(capture.uninstall)
        job = Karma(ztm, [1, 2, 3], logging.getLogger('cooldown-test'))
        runner = threading.Thread(target=job.run)
        runner.start()
        self.addCleanup(runner.join, 30)
        wait_for(lambda: job.tuner is not None and job.tuner.stats.cooldowns,
                 10, 'the loop to cool down')
        # Nothing is done while the standby lags.
        self.assertEqual(job.done, [])
        waits = [line for line in capture.lines() if 'Cooling' in line]
        self.assertEqual(len(waits), 1, capture.lines())
        self.assertIn('replication lag', waits[0])

        on_standby.cursor().execute('SELECT pg_wal_replay_resume()')
        runner.join(30)
        self.assertFalse(runner.is_alive())
        self.assertEqual(job.done, [1, 2, 3])
        self.assertTrue(any('Cooled down for' in line
                            for line in capture.lines()), capture.lines())
        self.assertEqual(karma(on_primary, [1, 2, 3]),
                         [k + 1 for k in before])  # each exactly once
