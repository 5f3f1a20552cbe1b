"""Signals that reach a script (LaunchpadScript) during a commit, in a frame
the framework shields, or while begin() waits for the database: the
transaction ends whole, or not at all, and the waits leave nothing behind."""

import inspect
import logging
import signal
import sys
import threading
import time
import unittest

import transaction

from canonical.database.config import DatabaseConfig
from canonical.database.connection import ReconnectingConnection
from canonical.testing.proxy import PortForwarder
from canonical.testing.proxy import free_port
from canonical.database.reconnect import ReconnectCoordinator
from canonical.database.reconnect import coordinator_for
from canonical.launchpad.database import Person
from canonical.launchpad.scripts import ScriptInterrupted
from canonical.launchpad.scripts.completion import completing
from canonical.launchpad.scripts.signals import InterruptHandler
from canonical.lp import initZopeless
from canonical.testing.layers import DatabaseLayer
from canonical.testing.layers import LaunchpadLayer
from test_script_units import TempDirMixin

log = logging.getLogger('test_script_signals')


def main_thread_in(function):
    """True while the main thread runs ``function``."""
    frame = sys._current_frames().get(threading.main_thread().ident)
    while frame is not None:
        if frame.f_code is function.__code__:
            return True
        frame = frame.f_back
    return False


def coordinator_state(coordinator):
    """(prober thread, direct attempts in flight) of a coordinator: the
    private state an exception escaping its waits must not leave behind."""
    return coordinator._prober, coordinator._in_flight


class DataManager:
    """Does nothing, except call ``on_vote`` when it votes, first of all
    the data managers of the transaction."""

    def __init__(self, on_vote):
        self.on_vote = on_vote
        self.transaction_manager = transaction.manager

    def abort(self, txn):
        pass

    tpc_begin = commit = tpc_finish = tpc_abort = abort

    def tpc_vote(self, txn):
        self.on_vote()

    def sortKey(self):
        return '!first'


class SignalTestCase(TempDirMixin, unittest.TestCase):

    def setUp(self):
        TempDirMixin.setUp(self)
        self.handler = InterruptHandler(log)
        self.assertTrue(self.handler.install())
        self.addCleanup(self.handler.uninstall)

    def raised_within(self, seconds):
        """Sleep (interruptibly) for up to ``seconds``; the interrupt."""
        deadline = time.monotonic() + seconds
        try:
            while time.monotonic() < deadline:
                time.sleep(0.001)
        except ScriptInterrupted as e:
            return e
        self.fail('no ScriptInterrupted within %s s' % seconds)

    def send_when(self, condition, signum=signal.SIGTERM):
        """Send ``signum`` to the main thread once ``condition()`` holds."""
        main = threading.main_thread().ident

        def watch():
            deadline = time.monotonic() + 10
            while not condition() and time.monotonic() < deadline:
                time.sleep(0.005)
            signal.pthread_kill(main, signum)
        thread = threading.Thread(target=watch, daemon=True)
        thread.start()
        self.addCleanup(thread.join)


class TestSignalDuringCommit(SignalTestCase):

    layer = LaunchpadLayer

    def test_the_commit_finishes_first(self):
        ztm = initZopeless(implicitBegin=False)
        ztm.begin()
        Person.get(1).karma = 999
        where = []

        def on_vote():
            signal.raise_signal(signal.SIGTERM)  # handled right here
            where.append(completing(inspect.currentframe()))
        transaction.get().join(DataManager(on_vote))
        ztm.commit()  # the signal came before the database committed
        self.assertEqual(where, ['commit'])
        self.assertTrue(self.handler.deferred)
        error = self.raised_within(2)
        self.assertEqual((error.signum, error.exit_status),
                         (signal.SIGTERM, 143))
        ztm.begin()
        self.assertEqual(Person.get(1).karma, 999)
        ztm.abort()

    def test_later_signals_are_only_logged(self):
        self.send_when(lambda: main_thread_in(SignalTestCase.raised_within),
                       signal.SIGINT)
        error = self.raised_within(5)
        self.assertEqual(error.exit_status, 130)
        signal.raise_signal(signal.SIGTERM)   # nothing raised
        time.sleep(0.01)
        self.assertEqual(self.handler.received, signal.SIGINT)


class TestShieldedFrames(SignalTestCase):
    """A signal landing in the framework's own step from main() to the
    cleanup is delivered again, so it never skips the cleanup."""

    def shielded_step(self):
        signal.raise_signal(signal.SIGTERM)  # handled in this very frame
        return 'carried on'

    def setUp(self):
        SignalTestCase.setUp(self)
        self.handler.shielded = frozenset({self.shielded_step.__code__})

    def test_delivered_again_outside(self):
        self.assertEqual(self.shielded_step(), 'carried on')
        self.assertEqual(self.raised_within(2).signum, signal.SIGTERM)

    def test_ignored_once_stopping(self):
        self.assertEqual(self.shielded_step(), 'carried on')
        self.handler.stopping = True
        deadline = time.monotonic() + 5
        while self.handler._timer is not None:   # the redelivery is due
            self.assertLess(time.monotonic(), deadline)
            time.sleep(0.001)
        self.assertFalse(self.handler.raised)


class TestSignalWhileWaitingForTheDatabase(SignalTestCase):
    """An interrupt ends begin()'s wait for a lost database at once, and
    leaves the reconnect coordinator as it found it."""

    layer = DatabaseLayer

    def setUp(self):
        SignalTestCase.setUp(self)
        server = DatabaseLayer.server
        self.port = free_port()
        self.proxy = PortForwarder(server.host, server.port, port=self.port,
                                   directory=self.tmp)
        self.addCleanup(self.proxy.stop)
        self.config = DatabaseConfig(
            dbhost='127.0.0.1 port=%d' % self.port, dbname='postgres',
            dbuser=server.superuser)
        self.coordinator = coordinator_for(self.config)

    def probing(self, attempts=3):
        start = self.coordinator.outage_attempts
        return lambda: self.coordinator.outage_attempts >= start + attempts

    def test_the_prober_is_interrupted(self):
        connection = ReconnectingConnection(self.config)
        self.send_when(self.probing())
        started = time.monotonic()
        self.assertRaises(ScriptInterrupted, connection.ensure_connected)
        self.assertLess(time.monotonic() - started, 5)
        self.assertEqual(coordinator_state(self.coordinator), (None, 0))
        self.proxy.start()
        raw = connection.ensure_connected()
        self.assertFalse(self.coordinator.in_outage)
        connection.close()
        self.assertIsNotNone(raw)

    def test_a_waiter_is_interrupted_while_another_thread_probes(self):
        results = []

        def connect():
            connection = ReconnectingConnection(self.config)
            results.append(connection.ensure_connected() is not None)
            connection.close()
        probing = self.probing()
        prober = threading.Thread(target=connect)
        prober.start()
        self.addCleanup(prober.join)
        self.send_when(lambda: probing() and main_thread_in(
            ReconnectCoordinator._wait))
        connection = ReconnectingConnection(self.config)
        self.assertRaises(ScriptInterrupted, connection.ensure_connected)
        self.assertEqual(coordinator_state(self.coordinator), (prober, 0))
        self.proxy.start()
        prober.join(10)
        self.assertEqual(results, [True])
        self.assertIsNotNone(connection.ensure_connected())
        connection.close()
