"""Branches of the script framework, run in this process: contracts,
options and logging, the lock, the cron switch, exit statuses, dry runs,
and signals that arrive during a commit or while begin() waits for the
database."""

import inspect
import io
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import unittest

import transaction
from zope.testing.cleanup import cleanUp
from zope.interface.verify import verifyObject

import canonical.lp
from canonical.database.config import DatabaseConfig
from canonical.database.connection import ReconnectingConnection
from canonical.testing.filedm import FileDataManager
from canonical.testing.proxy import PortForwarder
from canonical.testing.proxy import free_port
from canonical.database.reconnect import ReconnectCoordinator
from canonical.database.reconnect import coordinator_for
from canonical.launchpad.database import Person
from canonical.launchpad.scripts import LaunchpadCronScript
from canonical.launchpad.scripts import LaunchpadScript
from canonical.launchpad.scripts import LaunchpadScriptFailure
from canonical.launchpad.scripts import ScriptInterrupted
from canonical.launchpad.scripts import SilentLaunchpadScriptFailure
from canonical.launchpad.scripts.completion import completing
from canonical.launchpad.scripts.cron import cronscript_enabled
from canonical.launchpad.scripts.dryrun import DryRunGuard
from canonical.launchpad.scripts.interfaces import CronControlError
from canonical.launchpad.scripts.interfaces import IDryRunGuard
from canonical.launchpad.scripts.interfaces import IInterruptHandler
from canonical.launchpad.scripts.interfaces import ILaunchpadCronScript
from canonical.launchpad.scripts.interfaces import ILaunchpadScript
from canonical.launchpad.scripts.interfaces import ILogSetup
from canonical.launchpad.scripts.interfaces import IScriptLock
from canonical.launchpad.scripts.interfaces import LockHeldError
from canonical.launchpad.scripts.lock import LOCK_DIR_ENV
from canonical.launchpad.scripts.lock import ScriptLock
from canonical.launchpad.scripts.lock import default_lock_dir
from canonical.launchpad.scripts.logger import LogSetup
from canonical.launchpad.scripts.logger import log_level
from canonical.launchpad.scripts.logger import parse_log_file
from canonical.launchpad.scripts.signals import InterruptHandler
from canonical.lp import initZopeless
from canonical.testing.layers import DatabaseLayer
from canonical.testing.layers import LaunchpadLayer

log = logging.getLogger('test_script_units')


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


class TempDirMixin:

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix='zopeless-units-')
        self.addCleanup(shutil.rmtree, self.tmp, True)
        old = os.environ.get(LOCK_DIR_ENV)
        os.environ[LOCK_DIR_ENV] = self.tmp
        self.addCleanup(self._restore_env, old)

    @staticmethod
    def _restore_env(old):
        if old is None:
            os.environ.pop(LOCK_DIR_ENV, None)
        else:
            os.environ[LOCK_DIR_ENV] = old

    def tearDown(self):
        cleanUp()  # some of these tests have no layer to do it


class Script(LaunchpadCronScript):
    """Does what the test asks in ``work``, logging to a string."""

    supports_dry_run = True

    def __init__(self, *args, work=None, **kw):
        self.work = work or (lambda script: None)
        self.log_stream = io.StringIO()
        super().__init__(*args, **kw)

    def main(self):
        self.work(self)

    def output(self):
        return self.log_stream.getvalue()


class TestContracts(TempDirMixin, unittest.TestCase):

    def test_implementations_provide_their_interfaces(self):
        script = Script('contracts', test_args=[])
        self.assertTrue(verifyObject(ILaunchpadCronScript, script))
        self.assertTrue(verifyObject(
            ILaunchpadScript, LaunchpadScript('plain', test_args=[])))
        self.assertTrue(verifyObject(IScriptLock, script.lock))
        self.assertTrue(verifyObject(IInterruptHandler, script.interrupts))
        self.assertTrue(verifyObject(IDryRunGuard, DryRunGuard(log)))
        self.assertTrue(verifyObject(ILogSetup, LogSetup(script.options)))


class TestOptions(TempDirMixin, unittest.TestCase):

    def options(self, *args):
        return LaunchpadScript('options', test_args=list(args)).options

    def test_verbosity_moves_along_the_standard_levels(self):
        for args, level in (((), logging.INFO), (('-v',), logging.DEBUG),
                            (('-vvv',), logging.DEBUG),
                            (('-q',), logging.WARNING),
                            (('-qq',), logging.ERROR),
                            (('-qqqq',), logging.CRITICAL),
                            (('-v', '-q'), logging.INFO)):
            self.assertEqual(log_level(self.options(*args)), level, args)

    def test_log_file_values(self):
        self.assertEqual(parse_log_file('INFO:/tmp/a.log'),
                         (logging.INFO, '/tmp/a.log'))
        self.assertEqual(parse_log_file('/tmp/a.log'),
                         (logging.DEBUG, '/tmp/a.log'))
        self.assertEqual(parse_log_file('warning:b.log'),
                         (logging.WARNING, 'b.log'))
        self.assertRaises(ValueError, parse_log_file, 'LOUD:b.log')
        self.assertRaises(ValueError, parse_log_file, 'INFO:')

    def test_chatty_loggers_wait_for_a_second_v(self):
        for args, shown in ((('-v',), False), (('-vv',), True)):
            setup = LogSetup(self.options(*args), io.StringIO())
            setup.install()
            try:
                self.assertEqual(logging.getLogger('txn.1').isEnabledFor(
                    logging.DEBUG), shown)
                self.assertTrue(logging.getLogger('canonical.launchpad')
                                .isEnabledFor(logging.DEBUG))
            finally:
                setup.uninstall()

    def test_uninstall_leaves_logging_as_it_was(self):
        root = logging.getLogger()
        before = (list(root.handlers), root.level,
                  logging.getLogger('txn').level)
        setup = LogSetup(self.options('-v', '--log-file',
                                      os.path.join(self.tmp, 'x.log')))
        setup.install()
        setup.uninstall()
        self.assertEqual((list(root.handlers), root.level,
                          logging.getLogger('txn').level), before)


class TestLock(TempDirMixin, unittest.TestCase):

    def test_acquire_release_and_holder(self):
        lock = ScriptLock('locktest')
        self.assertEqual(os.path.dirname(lock.path), self.tmp)
        self.assertIsNone(lock.holder_pid())
        lock.acquire()
        self.assertTrue(lock.held)
        self.assertEqual(lock.holder_pid(), os.getpid())
        with open(lock.path) as f:
            self.assertEqual(f.read(), '%d\n' % os.getpid())
        lock.release()
        self.assertFalse(lock.held)
        self.assertIsNone(lock.holder_pid())
        lock.release()  # twice is harmless

    def test_the_same_process_cannot_take_it_twice(self):
        # A second POSIX lock in one process would succeed, and releasing
        # it would drop the first: refused instead.
        first, second = ScriptLock('locktest'), ScriptLock('locktest')
        first.acquire()
        self.addCleanup(first.release)
        with self.assertRaises(LockHeldError) as caught:
            second.acquire()
        self.assertEqual(caught.exception.pid, os.getpid())
        self.assertEqual(second.holder_pid(), os.getpid())
        self.assertTrue(first.held)

    def test_directory_and_names(self):
        self.assertEqual(default_lock_dir(), self.tmp)
        del os.environ[LOCK_DIR_ENV]
        self.assertTrue(os.access(default_lock_dir(), os.W_OK))
        self.assertRaises(ValueError, ScriptLock, '../etc/passwd')


class TestCronSwitch(unittest.TestCase):

    def control(self, text):
        tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, tmp)
        path = os.path.join(tmp, 'cron.ini')
        if text is not None:
            with open(path, 'w') as f:
                f.write(text)
        return path

    def test_sections_and_defaults(self):
        self.assertTrue(cronscript_enabled(self.control(None), 'a', log))
        path = self.control('[DEFAULT]\nenabled = false\n\n'
                            '[b]\nenabled = yes\n')
        self.assertFalse(cronscript_enabled(path, 'a', log))
        self.assertTrue(cronscript_enabled(path, 'b', log))
        path = self.control('[a]\nenabled = off\n')
        self.assertFalse(cronscript_enabled(path, 'a', log))
        self.assertTrue(cronscript_enabled(path, 'b', log))

    def test_a_broken_file_stops_the_script(self):
        for text in ('enabled = false\n', '[a]\nenabled = perhaps\n'):
            self.assertRaises(CronControlError, cronscript_enabled,
                              self.control(text), 'a', log)


class TestEndings(TempDirMixin, unittest.TestCase):

    layer = LaunchpadLayer

    def run_script(self, work, *args, **kw):
        script = Script('endings', test_args=list(args), work=work, **kw)
        status = script.run_with_status(implicitBegin=False)
        return status, script.output()

    def test_success_and_failures(self):
        def fail(exception):
            def work(script):
                raise exception
            return work
        cases = [
            (lambda s: None, 0, 'INFO    endings: done in'),
            (fail(LaunchpadScriptFailure('Nope.', 4)), 4, 'ERROR   Nope.'),
            (fail(LaunchpadScriptFailure('Default.')), 1, 'Default.'),
            (fail(SilentLaunchpadScriptFailure(5)), 5, ''),
            (fail(SystemExit(6)), 6, ''),
            (fail(SystemExit('Bad input.')), 1, 'ERROR   Bad input.'),
            (fail(KeyError('x')), 1, 'Traceback'),
        ]
        for work, expected, text in cases:
            status, output = self.run_script(work)
            self.assertEqual(status, expected, output)
            self.assertIn(text, output)
            if expected and text != 'Traceback':
                self.assertNotIn('Traceback', output)
            self.assertFalse(canonical.lp.isZopeless())
            self.assertIsNone(ScriptLock('endings').holder_pid())

    def test_a_refused_connection_is_an_error_without_traceback(self):
        status, output = self.run_script(
            lambda s: s.txn.begin(), '--dbuser', 'nosuchrole')
        self.assertEqual(status, 1)
        self.assertIn('role "nosuchrole" does not exist', output)
        self.assertNotIn('Traceback', output)

    def test_database_options_reach_the_transaction_manager(self):
        seen = {}

        def work(script):
            seen.update((key, script.txn.config.get(key))
                        for key in ('host', 'port', 'dbname', 'user'))
        server = DatabaseLayer.server
        status, output = self.run_script(
            work, '--dbname', 'launchpad_ftest', '--dbhost',
            '%s port=%s' % (server.host, server.port), dbuser='launchpad')
        self.assertEqual(status, 0, output)
        self.assertEqual(seen, {'host': server.host, 'port': str(server.port),
                                'dbname': 'launchpad_ftest',
                                'user': 'launchpad'})

    def test_work_in_progress_is_rolled_back(self):
        def work(script):
            script.txn.begin()
            Person.get(1).karma = 1
            raise LaunchpadScriptFailure('Giving up.')
        self.assertEqual(self.run_script(work)[0], 1)
        ztm = initZopeless(implicitBegin=False)
        ztm.begin()
        self.assertEqual(Person.get(1).karma, 130)
        ztm.abort()

    def test_a_manager_installed_before_is_left_installed(self):
        ztm = initZopeless(implicitBegin=False)
        status, output = self.run_script(lambda s: self.assertIs(s.txn, ztm))
        self.assertEqual(status, 0, output)
        self.assertTrue(ztm.installed)
        self.assertIs(canonical.lp.installedTransactionManager(), ztm)

    def test_a_forked_child_leaving_main_exits_at_once(self):
        log_file = os.path.join(self.tmp, 'fork.log')
        children = []

        def work(script):
            pid = os.fork()
            if pid:
                children.append(pid)
        status, output = self.run_script(work, '--log-file',
                                         'INFO:' + log_file)
        self.assertEqual(status, 0, output)
        # The child left through os._exit(0) in run_with_status: it never
        # came back here, and said nothing about the parent's run.
        self.assertEqual(os.waitpid(children[0], 0)[1], 0)
        with open(log_file) as f:
            self.assertEqual(f.read().count('done in'), 1)


class TestDryRun(TempDirMixin, unittest.TestCase):

    layer = LaunchpadLayer

    def karma(self, ztm):
        ztm.begin()
        try:
            return Person.get(1).karma
        finally:
            ztm.abort()

    def test_every_way_of_committing_is_rolled_back(self):
        ztm = initZopeless(implicitBegin=False)
        capture = io.StringIO()
        handler = logging.StreamHandler(capture)
        logger = logging.getLogger('dryrun-test')
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
        self.addCleanup(logger.removeHandler, handler)
        guard = DryRunGuard(logger)
        guard.install()
        path = os.path.join(self.tmp, 'file-dm')
        ztm.begin()
        Person.get(1).karma = 1
        transaction.get().join(FileDataManager(path, 'x'))
        self.assertIsNone(ztm.commit())
        ztm.begin()
        Person.get(1).karma = 2
        transaction.commit()
        for attempt in transaction.manager.attempts(2):
            with attempt:
                Person.get(1).karma = 3
        ztm.begin()
        ztm.abort()  # an abort is no commit
        self.assertEqual(guard.rolled_back, 3)
        self.assertFalse(os.path.exists(path))
        self.assertEqual(self.karma(ztm), 130)
        guard.uninstall()
        ztm.begin()
        Person.get(1).karma = 4
        ztm.commit()
        self.assertEqual(self.karma(ztm), 4)
        lines = capture.getvalue().splitlines()
        self.assertEqual(lines.count(
            'Dry run: rolling back instead of committing.'), 3)

    def test_implicit_transactions_too(self):
        initZopeless(implicitBegin=True)
        guard = DryRunGuard(log)
        guard.install()
        self.addCleanup(guard.uninstall)
        Person.get(1).karma = 5
        transaction.commit()
        self.assertEqual(Person.get(1).karma, 130)
        self.assertEqual(guard.rolled_back, 1)
        transaction.abort()


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
