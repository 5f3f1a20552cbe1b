"""Branches of the script framework, run in this process: contracts,
options and logging, the lock, the cron switch, exit statuses and dry
runs.  Signals are in test_script_signals.py."""

import concurrent.futures
import io
import logging
import os
import shutil
import tempfile
import unittest

import transaction
from zope.testing.cleanup import cleanUp
from zope.interface.verify import verifyObject

import canonical.lp
from canonical.testing.filedm import FileDataManager
from canonical.launchpad.database import Person
from canonical.launchpad.scripts import LaunchpadCronScript
from canonical.launchpad.scripts import LaunchpadScript
from canonical.launchpad.scripts import LaunchpadScriptFailure
from canonical.launchpad.scripts import SilentLaunchpadScriptFailure
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
from canonical.lp import initZopeless
from canonical.testing.layers import DatabaseLayer
from canonical.testing.layers import LaunchpadLayer


log = logging.getLogger('test_script_units')


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

    def test_worker_threads_commits_are_rolled_back(self):
        # A script's workers commit in threads of their own: one that used
        # the database before the guard, and one that first does after.
        ztm = initZopeless(implicitBegin=False)
        guard = DryRunGuard(logging.getLogger('dryrun-test'), ztm)
        pool = concurrent.futures.ThreadPoolExecutor(1)
        self.addCleanup(pool.shutdown)

        def give(karma):
            for attempt in transaction.manager.attempts(2):
                with attempt:
                    Person.get(1).karma = karma
        pool.submit(self.karma, ztm).result()
        guard.install()
        pool.submit(give, 5).result()
        with concurrent.futures.ThreadPoolExecutor(1) as fresh:
            fresh.submit(give, 6).result()
        self.assertEqual(guard.rolled_back, 2)
        self.assertEqual(self.karma(ztm), 130)
        guard.uninstall()
        pool.submit(give, 7).result()
        self.assertEqual(self.karma(ztm), 7)

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
