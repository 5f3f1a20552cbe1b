"""The contracts of canonical.launchpad.scripts: cron scripts, daemons and
the batch loops they run.

Exit statuses of a script run
-----------------------------
* 0: main() returned (the run's duration is logged), or a cron script is
  disabled by its switch.
* LaunchpadScriptFailure.exit_status (1 by default): main() gave up; the
  message is logged without a traceback.
* 1: another run holds the lock (the log names the lock file and the
  holder's pid), the database refused the connection for good, or an
  unexpected exception (logged with its traceback).
* 128 + the signal number (143 for SIGTERM, 130 for SIGINT): the run was
  interrupted.  The transaction in progress was rolled back, the
  connections closed and the lock released first.  A signal that arrives
  while a transaction commits or aborts takes effect when that has
  finished: a unit of work is never half committed.  Signals reach the
  main thread only: a script whose threads run transactions catches
  ScriptInterrupted, stops them and joins them before it lets it go on.
* 2: the command line was wrong (optparse's usage message).
"""

from typing import Optional

from zope.interface import Attribute
from zope.interface import Interface

__all__ = [
    'ILaunchpadScript',
    'ILaunchpadCronScript',
    'IScriptLock',
    'IInterruptHandler',
    'IDryRunGuard',
    'ILogSetup',
    'ITunableLoop',
    'ITunableLoopCleanUp',
    'ITunableLoopEstimate',
    'ITunableLoopItems',
    'ILoopTuner',
    'IDBLoopTuner',
    'ILoopStats',
    'LaunchpadScriptFailure',
    'SilentLaunchpadScriptFailure',
    'CronControlError',
    'LockHeldError',
    'ScriptInterrupted',
    'INTERRUPTED_STATUS_BASE',
]

# A run stopped by signal N exits with this plus N, as a shell reports a
# process killed by that signal.
INTERRUPTED_STATUS_BASE = 128


# -- exceptions --------------------------------------------------------------

class LaunchpadScriptFailure(Exception):
    """main() gives up: the message is logged (no traceback) and the run
    exits with ``exit_status``."""

    exit_status = 1

    def __init__(self, message: str = '',
                 exit_status: Optional[int] = None) -> None:
        super().__init__(message)
        if exit_status is not None:
            self.exit_status = exit_status


class SilentLaunchpadScriptFailure(LaunchpadScriptFailure):
    """main() gives up having said why already: exit with ``exit_status``
    and log nothing more."""

    def __init__(self, exit_status: int = 1) -> None:
        super().__init__('', exit_status)


class CronControlError(LaunchpadScriptFailure):
    """The cron control file exists but cannot be read or understood; the
    script does not run until it is fixed."""


class LockHeldError(Exception):
    """Another run of the script holds its lock."""

    def __init__(self, path: str, pid: Optional[int]) -> None:
        self.path = path
        self.pid = pid
        holder = 'process %d' % pid if pid else 'another process'
        super().__init__('%s holds the lock %s' % (holder, path))


class ScriptInterrupted(BaseException):
    """SIGTERM or SIGINT asked the script to stop.

    A BaseException, like KeyboardInterrupt, so that ``except Exception``
    in a script does not swallow it.
    """

    def __init__(self, signum: int) -> None:
        import signal
        self.signum = signum
        self.signame = signal.Signals(signum).name
        self.exit_status = INTERRUPTED_STATUS_BASE + signum
        super().__init__('Interrupted by %s' % self.signame)


# -- scripts -----------------------------------------------------------------

class ILaunchpadScript(Interface):
    """A script run from cron or by hand: options, logging, a lock, one
    installed transaction manager, clean stops on signals.

    A subclass writes main() and, optionally, add_my_options(), ``usage``
    and ``description``; it sets ``supports_dry_run`` to offer --dry-run.
    Every script has -v/-q (repeatable), --log-file LEVEL:PATH, --dbname,
    --dbhost and --dbuser.
    """

    name = Attribute("The script's name: its logger's and its lock's.")
    dbuser = Attribute("The database user when --dbuser is not given.")
    usage = Attribute("optparse usage text.")
    description = Attribute("optparse description text.")
    supports_dry_run = Attribute(
        "True when the script offers --dry-run: every commit is then rolled "
        "back instead, and the log says so.")
    database_settings = Attribute(
        "More keyword arguments for initZopeless() (reconnect_timeout, "
        "resolve_commit_outcome ...).")
    parser = Attribute("The optparse.OptionParser.")
    options = Attribute("The parsed options.")
    args = Attribute("The positional arguments.")
    logger = Attribute("The script's logging.Logger.")
    txn = Attribute(
        "The installed IZopelessTransactionManager while the script runs.")
    lock = Attribute("The IScriptLock of this script.")
    interrupts = Attribute("The IInterruptHandler of this script.")
    is_dry_run = Attribute("True when run with --dry-run.")
    items_processed = Attribute(
        "How many items main() processed, if it counts them (None by "
        "default): a cron script's metrics file reports it.")

    def main():
        """Do the work.  Raise LaunchpadScriptFailure to give up."""

    def add_my_options():
        """Add the script's own options to self.parser."""

    def run_with_status(use_lock=True, isolation='read_committed',
                        implicitBegin=True):
        """Take the lock (unless ``use_lock`` is false), install the
        transaction manager, run main() and release everything; return the
        exit status (see the module documentation)."""

    def lock_and_run(isolation='read_committed', implicitBegin=True):
        """run_with_status() with the lock; exit the process with the
        status unless it is 0."""

    def run(isolation='read_committed', implicitBegin=True):
        """run_with_status() without the lock; exit the process with the
        status unless it is 0."""

    def lock_or_die():
        """Take the lock, or log who holds it and exit with status 1."""

    def unlock():
        """Release the lock if this process holds it."""


class ILaunchpadCronScript(ILaunchpadScript):
    """A script run by cron, with a switch to disable it.

    The switch is ``enabled`` in the section named after the script (or
    in ``[DEFAULT]``) of an INI file: ``cron_control_file``, else
    $ZOPELESS_CRON_CONTROL, else /etc/zopeless/cronscripts.ini.  A missing
    file enables every script; a malformed one raises CronControlError.
    """

    cron_control_file = Attribute("Path of the control file, or None.")
    metrics_file = Attribute(
        "Where each run that was not switched off writes its figures for "
        "node_exporter's textfile collector (duration, exit status, items "
        "processed, time of the last success), atomically: "
        "<--metrics-dir or $ZOPELESS_METRICS_DIR>/<name>.prom; None when "
        "neither is set.")

    def is_enabled():
        """True when the control file lets this script run."""


class IScriptLock(Interface):
    """One run of a script at a time: a POSIX (fcntl) lock on a file named
    after the script.  The kernel drops it when its process ends, however
    it ends, so a crashed run leaves no stale lock; the file itself stays.
    The lock belongs to the process that took it, not to its children.
    """

    name = Attribute("The script's name.")
    path = Attribute("The lock file.")
    held = Attribute("True while this object holds the lock.")

    def acquire():
        """Take the lock without waiting; raise LockHeldError when another
        run holds it, naming its pid."""

    def release():
        """Release the lock (nothing happens if it is not held)."""

    def holder_pid():
        """The pid of the process holding the lock, or None."""


class IInterruptHandler(Interface):
    """Turns SIGTERM and SIGINT into ScriptInterrupted in the main thread.

    The first signal raises, once, where the main thread is, unless it is
    inside a transaction's commit or abort: then it is raised as soon as
    that is over.  Later signals, and all of them once the script is
    stopping, are logged and otherwise ignored.  A signal ends at once the
    waits of begin() for a lost database (sleeps and condition waits).
    """

    received = Attribute("The first signal number received, or None.")
    raised = Attribute("True once ScriptInterrupted has been raised.")
    deferred = Attribute(
        "True when the signal arrived during a commit or an abort.")
    stopping = Attribute("Set when the script stops: signals only log.")
    shielded = Attribute(
        "Code objects a signal must not land in directly (the framework's "
        "own step from main() to the cleanup): it is delivered again a "
        "moment later instead.")

    def install():
        """Install the handlers (main thread only); False elsewhere."""

    def uninstall():
        """Restore the previous handlers."""


class IDryRunGuard(Interface):
    """--dry-run: every commit becomes an abort, whether it goes through
    the transaction manager, ``transaction.commit()`` or
    ``transaction.manager.attempts()``: in the installing thread, and, when
    the guard was given the script's IZopelessTransactionManager, in
    every thread that manager serves."""

    rolled_back = Attribute("How many commits were rolled back instead.")

    def install():
        """Start guarding the transactions of the calling thread, and of
        the transaction manager's threads (see registerSynch())."""

    def uninstall():
        """Stop guarding."""


class ILogSetup(Interface):
    """The logging a script's options ask for: console and log files."""

    console_level = Attribute("The level -v and -q chose.")

    def install():
        """Add the handlers to the root logger."""

    def uninstall():
        """Remove them, close the files, restore the root level."""


# -- batch loops -------------------------------------------------------------

class ITunableLoop(Interface):
    """A big job done in chunks, each in its own transaction.

    A chunk that raises a TransientError (a disconnection) or a
    serialization failure committed nothing and is run again with the same
    size, so an operation must move on only once its chunk committed.
    """

    def isDone():
        """True when there is no work left."""

    def __call__(chunk_size):
        """Do about ``chunk_size`` items of work and commit them.  What it
        returns is ignored, as in Launchpad: the chunk counts as
        ``chunk_size`` items, unless the loop provides ITunableLoopItems."""


class ITunableLoopCleanUp(Interface):
    """Optional: a loop with something to release at the end."""

    def cleanUp():
        """Called once when the loop ends, however it ends."""


class ITunableLoopItems(Interface):
    """Optional, declared with ``@implementer``: a loop that counts the
    items it did, so the tuner sizes chunks by them and the stats report
    them.  An attribute nobody sets by chance, never the return value of
    __call__, which Launchpad's loops return anything from."""

    items_done = Attribute(
        "Items done and committed so far: a running total the loop keeps. "
        "A chunk counts as its increase over the chunk.")


class ITunableLoopEstimate(Interface):
    """Optional: a loop that knows how much work is left, for progress."""

    def estimateRemaining():
        """How many items are left, or None when unknown."""


class ILoopStats(Interface):
    """Counters of one run of a loop tuner."""

    chunks = Attribute("Chunks done (committed).")
    items = Attribute("Items done.")
    chunk_sizes = Attribute("The size of every chunk done, in order.")
    retries = Attribute("Chunks run again after a transient failure.")
    downtime = Attribute(
        "Seconds chunks spent waiting for a lost database (DBLoopTuner).")
    cooldowns = Attribute("Times the loop paused for a strained database.")
    cooldown_seconds = Attribute("Seconds spent in those pauses.")
    elapsed = Attribute("Seconds the run took.")
    aborted = Attribute("True when abort_time stopped the loop.")
    done = Attribute("True when the operation said it was done.")


class ILoopTuner(Interface):
    """Runs an ITunableLoop, sizing chunks so each takes about goal_seconds.

    After each chunk the size moves halfway (geometrically) towards the
    size that would have taken goal_seconds at the rate just measured,
    within the bounds.  Time spent waiting for a lost database does not
    count.  Progress (items done, chunk size, rate, time left) is logged at
    INFO every ``progress_interval`` seconds; each decision at DEBUG.
    """

    operation = Attribute("The ITunableLoop.")
    goal_seconds = Attribute("How long a chunk should take.")
    minimum_chunk_size = Attribute("The smallest chunk, and the first.")
    maximum_chunk_size = Attribute("The largest chunk.")
    abort_time = Attribute("Stop (with a warning) after this many seconds.")
    cooldown_time = Attribute(
        "Seconds to sleep between chunks; None, zero or less: no sleep, as "
        "in Launchpad.")
    progress_interval = Attribute("Seconds between progress lines.")
    max_retries = Attribute(
        "Transient failures in a row after which the error is raised.")
    chunk_size = Attribute("The size of the next chunk.")
    stats = Attribute("The ILoopStats of the run.")
    log = Attribute("The logging.Logger used.")

    def run():
        """Run chunks until the operation is done or abort_time passed; call
        its cleanUp() at the end.  Return the stats."""


class IDBLoopTuner(ILoopTuner):
    """A loop tuner that also cools down while the database is strained.

    Before every chunk it looks for transactions of the same database open
    longer than ``long_transaction_seconds`` (pg_stat_activity) and, when
    the server has standbys, for replication lag above
    ``replication_lag_seconds`` (pg_stat_replication).  While either holds
    it aborts its own transaction (so it never becomes the long transaction
    itself), logs why, and checks again every ``cooldown_poll_seconds``.
    The script's database role needs pg_monitor to see other roles'
    sessions and the standbys' lag; it is told once when it lacks it.
    """

    long_transaction_seconds = Attribute("Threshold of transaction age.")
    replication_lag_seconds = Attribute("Threshold of replication lag.")
    cooldown_poll_seconds = Attribute("Seconds between two checks.")

    def longRunningTransactions():
        """(pid, user, database, age in seconds, state, query) of every
        other transaction of this database older than the threshold."""

    def replicationLag():
        """The largest replay lag of the standbys in seconds; None when
        there are none or their lag cannot be seen."""
