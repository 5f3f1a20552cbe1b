"""LaunchpadScript: what every cron script and daemon needs around main().

::

    class Frobnicate(LaunchpadScript):
        description = 'Frobnicate every widget.'
        supports_dry_run = True

        def add_my_options(self):
            self.parser.add_option('--limit', type='int', default=100)

        def main(self):
            ...
            self.txn.commit()

    if __name__ == '__main__':
        Frobnicate('frobnicate', dbuser='cron').lock_and_run()

The exit statuses are listed in canonical.launchpad.scripts.interfaces.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from optparse import OptionParser
from typing import Any, Dict, List, Optional, TextIO

from zope.interface import implementer

from canonical.database.interfaces import ConfigurationError
from canonical.database.interfaces import ConnectionFailedError
from canonical.database.interfaces import IZopelessTransactionManager
from canonical.database.isolation import READ_COMMITTED_ISOLATION
from canonical.database.policy import POLICIES
from canonical.database.policy import policy_named
from canonical.launchpad.scripts.completion import abort_quietly
from canonical.launchpad.scripts.dryrun import DryRunGuard
from canonical.launchpad.scripts.interfaces import ILaunchpadScript
from canonical.launchpad.scripts.interfaces import LaunchpadScriptFailure
from canonical.launchpad.scripts.interfaces import LockHeldError
from canonical.launchpad.scripts.interfaces import ScriptInterrupted
from canonical.launchpad.scripts.interfaces import \
    SilentLaunchpadScriptFailure
from canonical.launchpad.scripts.lock import ScriptLock
from canonical.launchpad.scripts.logger import LogSetup
from canonical.launchpad.scripts.logger import logger_options
from canonical.launchpad.scripts.logger import parse_log_file
from canonical.launchpad.scripts.signals import InterruptHandler

__all__ = ['LaunchpadScript', 'database_options']


def database_options(parser: OptionParser) -> None:
    """Add --dbname, --dbhost, --dbuser and --db-policy to ``parser``."""
    parser.add_option('--dbname', dest='dbname', default=None,
                      help='The database to use (default: $LP_DBNAME).')
    parser.add_option('--dbhost', dest='dbhost', default=None,
                      help='The database host, optionally followed by libpq '
                      'keywords: "db1 port=5433" (default: $LP_DBHOST).')
    parser.add_option('--dbuser', dest='dbuser', default=None,
                      help="The database user (default: the script's own).")
    parser.add_option('--db-policy', dest='db_policy', default=None,
                      choices=sorted(POLICIES),
                      help='Where units of work run: primary, standby '
                      '(read-only, the primary when no standby is fit) or '
                      'standby-only (default: the script\'s '
                      'database_policy, else primary).')


@implementer(ILaunchpadScript)
class LaunchpadScript:
    """See ILaunchpadScript."""

    usage: Optional[str] = None
    description: Optional[str] = None
    supports_dry_run = False
    database_settings: Dict[str, Any] = {}
    # 'standby' or 'standby-only': main() runs under that database policy
    # (a read-only job on a standby); --db-policy overrides it.
    database_policy: Optional[str] = None
    lock_dir: Optional[str] = None    # None: see lock.default_lock_dir()
    log_stream: Optional[TextIO] = None   # None: sys.stderr
    items_processed: Optional[int] = None   # main() may count its work

    def __init__(self, name: Optional[str] = None,
                 dbuser: Optional[str] = None,
                 test_args: Optional[List[str]] = None) -> None:
        self.name = name or type(self).__name__.lower()
        self.dbuser = dbuser
        self.parser = OptionParser(usage=self.usage,
                                   description=self.description)
        logger_options(self.parser)
        database_options(self.parser)
        if self.supports_dry_run:
            self.parser.add_option(
                '--dry-run', action='store_true', dest='dry_run',
                default=False, help='Do everything, but roll every commit '
                'back instead.')
        self._add_framework_options()
        self.add_my_options()
        self.options, self.args = self.parser.parse_args(args=test_args)
        for value in self.options.log_files:
            try:
                parse_log_file(value)
            except ValueError as e:
                self.parser.error(str(e))
        self.logger = logging.getLogger(self.name)
        self.txn: Optional[IZopelessTransactionManager] = None
        self.lock = ScriptLock(self.name, self.lock_dir)
        self.interrupts = InterruptHandler(
            self.logger, shielded=[LaunchpadScript.run_with_status])
        self._installed_txn = False
        self._dry_run: Optional[DryRunGuard] = None
        self._skipped = False

    @property
    def is_dry_run(self) -> bool:
        return bool(getattr(self.options, 'dry_run', False))

    # -- for subclasses ------------------------------------------------------

    def main(self) -> None:
        raise NotImplementedError('%s must define main().'
                                  % type(self).__name__)

    def add_my_options(self) -> None:
        pass

    def _may_run(self) -> bool:
        """False when the script must not run now (LaunchpadCronScript)."""
        return True

    def _add_framework_options(self) -> None:
        """Options of a kind of script (LaunchpadCronScript's)."""

    # -- running --------------------------------------------------------------

    def lock_or_die(self) -> None:
        try:
            self.lock.acquire()
        except LockHeldError as e:
            self._report_lock_held(e)
            sys.exit(1)

    def unlock(self) -> None:
        self.lock.release()

    def lock_and_run(self, isolation: str = READ_COMMITTED_ISOLATION,
                     implicitBegin: bool = True) -> None:
        status = self.run_with_status(True, isolation, implicitBegin)
        if status:
            sys.exit(status)

    def run(self, isolation: str = READ_COMMITTED_ISOLATION,
            implicitBegin: bool = True) -> None:
        status = self.run_with_status(False, isolation, implicitBegin)
        if status:
            sys.exit(status)

    def run_with_status(self, use_lock: bool = True,
                        isolation: str = READ_COMMITTED_ISOLATION,
                        implicitBegin: bool = True) -> int:
        pid = os.getpid()
        started = time.monotonic()
        logs = LogSetup(self.options, self.log_stream)
        logs.install()
        self.interrupts.install()
        status = 1
        try:
            status = self._guarded(use_lock, isolation, implicitBegin)
        finally:
            # A signal that lands right here, in this frame, is delivered
            # again a moment later (see InterruptHandler.shielded): to
            # the cleanup, which ignores it once stopping is set.
            self.interrupts.stopping = True
            try:
                if os.getpid() != pid:
                    # A forked child came back from main(): the lock, the
                    # log and the connections are its parent's business.
                    os._exit(status)
                self._release_everything()
                self._report_end(status, time.monotonic() - started,
                                 use_lock)
            finally:
                self.interrupts.uninstall()
                logs.uninstall()
        return status

    def _guarded(self, use_lock: bool, isolation: str,
                 implicitBegin: bool) -> int:
        """Run main(); the exit status of what happened."""
        try:
            if not self._may_run():
                self._skipped = True
                return 0
            if use_lock:
                self.lock.acquire()
            self._install_txn(isolation, implicitBegin)
            name = getattr(self.options, 'db_policy', None) or \
                self.database_policy
            if name is None:
                self.main()
            else:
                with policy_named(name):
                    self.main()
        except LockHeldError as e:
            self._report_lock_held(e)
            return 1
        except SilentLaunchpadScriptFailure as e:
            return e.exit_status
        except LaunchpadScriptFailure as e:
            self.logger.error('%s', e)
            return e.exit_status
        except (ConnectionFailedError, ConfigurationError) as e:
            self.logger.error('%s', e)  # says what to fix; no traceback
            return 1
        except ScriptInterrupted as e:
            return e.exit_status
        except SystemExit as e:
            return _exit_code(e, self.logger)
        except Exception:
            self.logger.exception('Unhandled exception; the transaction in '
                                  'progress is rolled back.')
            return 1
        return 0

    def _install_txn(self, isolation: str, implicitBegin: bool) -> None:
        from canonical.lp import initZopeless
        from canonical.lp import installedTransactionManager
        options = self.options
        installed = installedTransactionManager()
        if installed is not None and options.dbname is options.dbhost is \
                options.dbuser is None:
            # Installed by whoever runs the script (a test, a daemon that
            # runs several): theirs to keep.
            self.txn, self._installed_txn = installed, False
        else:
            self.txn = initZopeless(
                dbname=options.dbname, dbhost=options.dbhost,
                dbuser=options.dbuser or self.dbuser, isolation=isolation,
                implicitBegin=implicitBegin, **self.database_settings)
            self._installed_txn = installed is None
        if self.is_dry_run:
            self._dry_run = DryRunGuard(self.logger, self.txn)
            self._dry_run.install()

    def _release_everything(self) -> None:
        """Roll back what is in progress, close the connections, release
        the lock: whatever happened, one failing step does not stop the
        next."""
        steps = [abort_quietly]
        if self._dry_run is not None:
            steps.append(self._dry_run.uninstall)
        if self.txn is not None and self._installed_txn:
            steps.append(self.txn.uninstall)
        steps.append(self.unlock)
        for step in steps:
            try:
                step()
            except Exception:
                self.logger.exception('Cleaning up failed (%s); carrying on.',
                                      getattr(step, '__name__', step))
        self._dry_run = None
        if self._installed_txn:
            self.txn, self._installed_txn = None, False

    def _report_lock_held(self, error: LockHeldError) -> None:
        holder = 'process %d' % error.pid if error.pid else 'another process'
        self.logger.warning('%s is already running: %s holds the lock %s; '
                            'not starting another run.', self.name, holder,
                            error.path)

    def _report_end(self, status: int, seconds: float,
                    locked: bool) -> None:
        interrupts = self.interrupts
        if interrupts.raised:
            self.logger.warning(
                'Stopped by %s after %.3f s: the transaction in progress was '
                'rolled back, the connections closed%s (exit status %d).',
                _signame(interrupts.received), seconds,
                ' and the lock released' if locked else '', status)
        elif interrupts.received is not None:
            self.logger.info('%s came as the run ended; its work is done.',
                             _signame(interrupts.received))
        if status == 0 and not self._skipped:
            self.logger.info('%s: done in %.3f s.', self.name, seconds)
        elif not interrupts.raised:
            self.logger.debug('%s: exit status %d after %.3f s.', self.name,
                              status, seconds)


def _signame(signum: Optional[int]) -> str:
    import signal
    return signal.Signals(signum).name if signum else 'a signal'


def _exit_code(error: SystemExit, log: logging.Logger) -> int:
    code = error.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    log.error('%s', code)
    return 1
