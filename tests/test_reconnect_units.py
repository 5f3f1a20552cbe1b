"""The reconnect machinery's small parts, without a server: backoff bounds,
error classification, host lists, one prober for a herd, waits that an
exception interrupts, and the probe schedule."""

import random
import threading
import time
import unittest

import psycopg2
from zope.testing.cleanup import CleanUp

from canonical.database import reconnect
from canonical.database.classify import is_disconnect
from canonical.database.classify import is_permanent_connect_error
from canonical.database.classify import is_retryable_conflict
from canonical.database.config import DatabaseConfig
from canonical.database.connection import ReconnectingConnection
from canonical.database.hosts import DatabaseServers
from canonical.database.hosts import split_hosts
from canonical.database.identity import ServerIdentity
from canonical.database.interfaces import DatabaseUnavailableError
from canonical.database.reconnect import Backoff


class TestBackoff(unittest.TestCase):

    def test_delays_grow_to_the_cap_with_jitter_below_it(self):
        backoff = Backoff(0.005, 0.05, rng=random.Random(1))
        delays = [backoff.next_delay() for i in range(50)]
        self.assertTrue(all(0.0025 <= d <= 0.05 for d in delays))
        self.assertLess(delays[0], 0.0051)
        # Once capped, every delay lies in [cap/2, cap]: a bounded rate.
        self.assertTrue(all(d >= 0.025 for d in delays[10:]))
        self.assertGreater(len(set(delays[10:])), 30)  # jittered


class TestClassification(unittest.TestCase):

    def test_permanent_and_transient_connect_errors(self):
        permanent = [
            'FATAL:  password authentication failed for user "x"',
            'FATAL:  role "nobody" does not exist',
            'FATAL:  database "nodb" does not exist',
            'FATAL:  no pg_hba.conf entry for host "1.2.3.4"',
        ]
        transient = [
            'connection to server at "127.0.0.1", port 1 failed: '
            'Connection refused',
            'FATAL:  the database system is starting up',
            'FATAL:  the database system is shutting down',
            'FATAL:  sorry, too many clients already',
            'FATAL:  remaining connection slots are reserved',
            'timeout expired',
        ]
        for text in permanent:
            self.assertTrue(is_permanent_connect_error(
                psycopg2.OperationalError(text)), text)
        for text in transient:
            self.assertFalse(is_permanent_connect_error(
                psycopg2.OperationalError(text)), text)
        unknown_host = psycopg2.OperationalError(
            'could not translate host name "dbx" to address')
        self.assertTrue(is_permanent_connect_error(unknown_host))
        self.assertFalse(is_permanent_connect_error(unknown_host,
                                                    ever_connected=True))

    def test_statement_errors(self):
        lost = psycopg2.OperationalError(
            'server closed the connection unexpectedly')
        self.assertTrue(is_disconnect(lost))
        self.assertFalse(is_disconnect(psycopg2.ProgrammingError('syntax')))
        try:
            raise ValueError('wrapped') from lost
        except ValueError as wrapped:
            self.assertTrue(is_disconnect(wrapped))
        self.assertFalse(is_retryable_conflict(lost))


class TestHostLists(unittest.TestCase):

    def test_one_host(self):
        self.assertEqual(split_hosts({'host': 'db1', 'port': '5433'}), [{}])
        self.assertEqual(split_hosts({}), [{}])

    def test_a_list_with_one_port_or_one_each(self):
        self.assertEqual(split_hosts({'host': 'a,b', 'port': '5432'}), [
            {'host': 'a', 'port': '5432'}, {'host': 'b', 'port': '5432'}])
        self.assertEqual(split_hosts({'host': 'a,b', 'port': '1,2',
                                      'hostaddr': '10.0.0.1,10.0.0.2'}), [
            {'host': 'a', 'port': '1', 'hostaddr': '10.0.0.1'},
            {'host': 'b', 'port': '2', 'hostaddr': '10.0.0.2'}])

    def test_what_libpq_would_refuse_is_left_to_libpq(self):
        self.assertEqual(split_hosts({'host': 'a,b,c', 'port': '1,2'}), [{}])
        self.assertEqual(split_hosts({'host': 'a,b',
                                      'load_balance_hosts': 'random'}), [{}])

    def test_the_host_that_answered_comes_first(self):
        config = DatabaseConfig(dbname='x', dbhost='127.0.0.1,localhost '
                                'port=1,2')
        servers = DatabaseServers(config)
        self.assertEqual(servers.hosts, ['127.0.0.1:1', 'localhost:2'])
        self.assertEqual([h.label for h in servers._order()],
                         servers.hosts)
        servers._hosts[1].last_ok = 5.0
        self.assertEqual([h.label for h in servers._order()],
                         ['localhost:2', '127.0.0.1:1'])
        servers._hosts[1].suspect_since = 6.0
        self.assertEqual([h.label for h in servers._order()],
                         ['127.0.0.1:1'])

    def test_only_a_later_timeline_counts_as_a_change(self):
        # begin() asks whether its connection's server became a demoted
        # primary only when timeline_changes moved since it last looked.
        servers = DatabaseServers(DatabaseConfig(dbname='x'))
        old = ServerIdentity('sys', 3, 'then', 11, False, 'h:1')
        new = old._replace(timeline=4, started='now')
        self.assertEqual(servers.timeline_changes, 0)
        self.assertFalse(servers._refuse_stale(old))
        self.assertEqual(servers.timeline_changes, 1)
        self.assertFalse(servers._refuse_stale(old))  # the same: no change
        self.assertEqual(servers.timeline_changes, 1)
        self.assertFalse(servers.is_stale(old))
        self.assertFalse(servers._refuse_stale(new))
        self.assertEqual(servers.timeline_changes, 2)
        self.assertTrue(servers.is_stale(old))
        self.assertTrue(servers._refuse_stale(old))  # refused: no change
        self.assertEqual(servers.timeline_changes, 2)
        other = old._replace(system='other', timeline=1)
        self.assertFalse(servers._refuse_stale(other))
        self.assertEqual(servers.timeline_changes, 3)
        self.assertFalse(servers.is_stale(new))


class TestNoHerd(CleanUp, unittest.TestCase):

    def test_threads_arriving_together_make_one_attempt(self):
        from canonical.testing.proxy import free_port
        from canonical.database.interfaces import DatabaseUnavailableError
        # Nothing listens on the port; a slow backoff keeps the prober to
        # its first sleep, so every attempt counted is a thread's own.
        config = DatabaseConfig(dbhost='127.0.0.1 port=%d' % free_port(),
                                dbname='x', reconnect_timeout=0.5,
                                reconnect_initial_delay=1.0,
                                reconnect_max_delay=1.0)
        coordinator = reconnect.coordinator_for(config)
        barrier = threading.Barrier(20)
        errors = []

        def begin():
            barrier.wait()
            try:
                ReconnectingConnection(config).ensure_connected()
            except DatabaseUnavailableError as e:
                errors.append(e)
        threads = [threading.Thread(target=begin) for i in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(5)
        self.assertEqual(len(errors), 20)
        # The first thread's attempt, and the prober's last one at the
        # deadline: not one per thread.
        self.assertLessEqual(coordinator.attempts, 2)


class TestInterruptedWaits(unittest.TestCase):
    """A signal handler raising inside the coordinator (a script's SIGTERM)
    leaves no slot taken: other threads are not left waiting for a probe
    or an attempt nobody is making."""

    def refusing_connector(self, config):
        raise psycopg2.OperationalError('connection refused')

    def test_interrupted_prober_frees_its_slot(self):
        config = DatabaseConfig(dbname='db', environ={})

        class Interrupting:
            # Raises where the prober reads its settings, before it makes
            # any attempt: the gap the slot must also cover.
            def __getattr__(self, name):
                if name == 'reconnect_initial_delay':
                    raise KeyboardInterrupt
                return getattr(config, name)

        coordinator = reconnect.ReconnectCoordinator(
            config, connector=self.refusing_connector)
        with self.assertRaises(KeyboardInterrupt):
            coordinator.connect(Interrupting())
        self.assertTrue(coordinator.in_outage)
        self.assertIsNone(coordinator._prober)
        self.assertEqual(coordinator._in_flight, 0)

    def test_interrupted_attempt_frees_the_in_flight_count(self):
        config = DatabaseConfig(dbname='db', environ={})

        def interrupted(config):
            raise KeyboardInterrupt

        coordinator = reconnect.ReconnectCoordinator(config,
                                                     connector=interrupted)
        with self.assertRaises(KeyboardInterrupt):
            coordinator.connect(config)
        self.assertEqual(coordinator._in_flight, 0)
        self.assertEqual(coordinator.refusals, {})


class TestProbeSchedule(unittest.TestCase):
    """A prober taking over from one that gave up continues the outage's
    schedule: waiters whose deadlines fall close together add no
    attempts."""

    def test_successive_deadlines_make_no_extra_attempts(self):
        config = DatabaseConfig(dbname='db', environ={},
                                reconnect_initial_delay=1.0,
                                reconnect_max_delay=1.0)

        def refusing(config):
            raise psycopg2.OperationalError('connection refused')

        coordinator = reconnect.ReconnectCoordinator(config,
                                                     connector=refusing)
        for timeout in (0.1, 0.15, 0.2):
            with self.assertRaises(DatabaseUnavailableError):
                coordinator.connect(config, time.monotonic() + timeout)
        # The first caller's own attempt; each later prober found the last
        # attempt too recent to try again before its deadline.
        self.assertEqual(coordinator.attempts, 1)
        self.assertTrue(coordinator.in_outage)
