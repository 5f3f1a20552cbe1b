"""Faults the test proxy makes between the library and its private server:
a link dropped mid-transaction, and a COMMIT cut off in flight (with and
without resolve_commit_outcome).  The server side of the faults is in
test_reconnect_faults.py, whose private cluster these tests share."""

import os
import threading
import time

import transaction
from transaction.interfaces import TransientError

from canonical.testing.tcpproxy import TCPProxy
from canonical.testing.waiting import wait_for
from canonical.testing.logcapture import LogCapture
from canonical.database.interfaces import CommitOutcomeUnknownError
from canonical.database.interfaces import DisconnectionError
from canonical.database.reconnect import coordinator_for
from canonical.launchpad.database import Person
from test_reconnect_faults import FaultClusterLayer
from test_reconnect_faults import FaultTestCase


class ProxiedTestCase(FaultTestCase):
    """The manager reaches the server through a proxy that cuts links."""

    def setUp(self):
        self.cluster = FaultClusterLayer.cluster
        self.proxy = TCPProxy('127.0.0.1', self.cluster.port)
        self.addCleanup(self.proxy.close)
        self.ztm = self.install(port=self.proxy.port, **self.options)
        self.log = LogCapture('canonical.database')

    def karma(self):
        cursor = self.admin()
        cursor.execute('SELECT karma FROM person WHERE id = 1')
        return cursor.fetchone()[0]


class TestLinkDropped(ProxiedTestCase):

    def test_threads_whose_connections_died_make_one_probe(self):
        # A slow backoff, so that every extra attempt would show.
        self.ztm.uninstall()
        self.ztm = self.install(port=self.proxy.port,
                                reconnect_initial_delay=0.4,
                                reconnect_max_delay=0.4)
        coordinator = coordinator_for(self.ztm.config)
        connected = threading.Barrier(21)
        go = threading.Event()
        results = []

        def work():
            self.ztm.begin()  # a live connection of its own
            self.ztm.commit()
            connected.wait()
            go.wait()
            try:
                self.ztm.begin()
                results.append(Person.get(1).name)
                self.ztm.commit()
            except Exception as e:
                results.append(e)
        threads = [threading.Thread(target=work) for i in range(20)]
        for thread in threads:
            thread.start()
        connected.wait()
        # The link dies just after they all connected, the database
        # having answered a moment ago.
        self.proxy.refuse()
        self.addCleanup(self.let_in, threads)  # should an assertion fail
        self.proxy.cut()
        before = coordinator.attempts
        probes = coordinator.outage_attempts
        started = time.monotonic()
        go.set()
        wait_for(lambda: coordinator.outage_attempts - probes >= 4, 10,
                 'four probes')
        attempts = coordinator.attempts - before
        # Each thread finds its connection dead; one attempt finds the
        # database gone, then one prober tries every 0.2-0.4 s for all.
        self.assertLessEqual(attempts, 1 + 5)
        self.assertLessEqual(attempts,
                             2 + (time.monotonic() - started) / 0.2)
        self.let_in(threads)
        self.assertEqual(results, ['sabdfl'] * 20)

    def let_in(self, threads):
        self.proxy.admit()
        for thread in threads:
            thread.join(10)


class TestCommitInFlight(ProxiedTestCase):

    def test_outcome_unknown_is_never_reported_as_success(self):
        self.ztm.begin()
        Person.get(1).karma = 500
        self.proxy.trap('COMMIT', forward=True)
        self.assertRaises(CommitOutcomeUnknownError, self.ztm.commit)
        self.assertEqual(self.proxy.sprung, 1)
        self.ztm.abort()
        # The proxy closes the server's side once it answered.
        self.proxy.wait(lambda p: p.open_links == 0, what='the COMMIT')
        self.assertEqual(self.karma(), 500)  # it did commit: unknowable

    def test_outcome_unknown_when_commit_never_arrived(self):
        self.ztm.begin()
        Person.get(1).karma = 501
        self.proxy.trap('COMMIT', forward=False)
        self.assertRaises(CommitOutcomeUnknownError, self.ztm.commit)
        self.ztm.abort()
        self.assertEqual(self.karma(), 130)

    def test_prepare_cut_in_flight_is_rolled_back(self):
        from canonical.testing.filedm import FileDataManager
        path = os.path.join(self.tempdir(), 'out')
        self.ztm.begin()
        Person.get(1).karma = 504
        filedm = FileDataManager(path, 'x')
        transaction.get().join(filedm)
        # The server prepares; the answer never comes back.
        self.proxy.trap('PREPARE TRANSACTION', forward=True)
        self.assertRaises(DisconnectionError, self.ztm.commit)
        self.ztm.abort()
        self.assertFalse(os.path.exists(path))
        self.assertIn('tpc_abort', filedm.calls)
        cursor = self.admin()
        cursor.execute('SELECT count(*) FROM pg_prepared_xacts')
        self.assertEqual(cursor.fetchone()[0], 0)
        self.assertEqual(self.karma(), 130)


class TestCommitInFlightResolved(TestCommitInFlight):

    options = {'resolve_commit_outcome': True}

    def test_outcome_unknown_is_never_reported_as_success(self):
        self.ztm.begin()
        Person.get(1).karma = 500
        self.proxy.trap('COMMIT', forward=True)
        self.ztm.commit()  # resolved: it committed
        self.assertEqual(self.karma(), 500)

    def test_outcome_unknown_when_commit_never_arrived(self):
        self.ztm.begin()
        Person.get(1).karma = 501
        # The outcome marker says it did not commit: safe to run again.
        self.proxy.trap('COMMIT', forward=False)
        with self.assertRaises(DisconnectionError) as caught:
            self.ztm.commit()
        self.assertIsInstance(caught.exception, TransientError)
        self.assertIn('not on the server now', str(caught.exception))
        self.ztm.abort()
        self.assertEqual(self.karma(), 130)

    def test_alone_it_commits_in_one_phase(self):
        # The marker, not a PREPARE, makes the outcome exact: no extra
        # round trip, and no prepared transaction to leave behind.
        self.ztm.begin()
        Person.get(1).karma = 505
        self.proxy.trap('PREPARE TRANSACTION', forward=False)
        self.ztm.commit()
        self.assertEqual(self.proxy.sprung, 0)
        self.assertEqual(self.karma(), 505)

    def test_commit_prepared_deferred_past_the_timeout(self):
        from canonical.testing.filedm import FileDataManager
        self.ztm.uninstall()
        self.ztm = self.install(port=self.proxy.port, reconnect_timeout=0.3,
                                **self.options)
        path = os.path.join(self.tempdir(), 'out')
        self.ztm.begin()
        Person.get(1).karma = 503
        transaction.get().join(FileDataManager(path, 'x'))
        self.proxy.trap('COMMIT PREPARED', forward=False,
                        then_refuse=True)
        self.ztm.commit()  # decided: reported committed, finished later
        cursor = self.admin()
        cursor.execute('SELECT count(*) FROM pg_prepared_xacts')
        self.assertEqual(cursor.fetchone()[0], 1)
        self.assertEqual(self.karma(), 130)  # not visible yet
        self.proxy.admit()
        self.ztm.begin()  # the new connection finishes it first
        self.ztm.abort()
        cursor.execute('SELECT count(*) FROM pg_prepared_xacts')
        self.assertEqual(cursor.fetchone()[0], 0)
        self.assertEqual(self.karma(), 503)

    def test_two_phase_commit_cut_during_commit_prepared(self):
        from canonical.testing.filedm import FileDataManager
        path = os.path.join(self.tempdir(), 'out')
        self.ztm.begin()
        Person.get(1).karma = 502
        transaction.get().join(FileDataManager(path, 'x'))
        self.proxy.trap('COMMIT PREPARED', forward=False)
        self.ztm.commit()  # tpc_finish never fails: finished after reconnect
        self.assertEqual(self.karma(), 502)
        cursor = self.admin()
        cursor.execute('SELECT count(*) FROM pg_prepared_xacts')
        self.assertEqual(cursor.fetchone()[0], 0)
