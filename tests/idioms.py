"""The documented ways to run a unit of work, for the idiom matrix
(test_idioms.py).

A unit writes a row of ``person`` named after the case (its first
statement, which carries the BEGIN) and then adds one to that row's karma
(its second statement, an UPDATE, which a trap of the test proxy cuts on
the first attempt when a fault is injected).  Run once and committed once,
the row exists exactly once with karma 1.

Every idiom is a function ``idiom(ztm, work)`` that runs ``work`` as one
unit the way the README or a doctest does, raising what the unit raised
when the idiom does not retry by itself.
"""

import io
import logging

import transaction

from canonical.launchpad.database import Person
from canonical.launchpad.scripts import LaunchpadScript
from canonical.launchpad.scripts import TunableLoop
from canonical.lp import installedTransactionManager

__all__ = ['IDIOMS', 'RETRYING', 'WRITERS', 'ScriptFailed']


def write_sql(name):
    db = installedTransactionManager().connection()
    db.execute("INSERT INTO person (name, displayname) VALUES (%s, 'idiom')",
               (name,))
    db.execute('UPDATE person SET karma = karma + 1 WHERE name = %s',
               (name,))


def write_model(name):
    person = Person(name=name, displayname='idiom')
    person.karma = person.karma + 1


WRITERS = {'sql': write_sql, 'model': write_model}


def ztm_begin_commit(ztm, work):
    ztm.begin()
    try:
        work()
    except BaseException:
        ztm.abort()
        raise
    ztm.commit()


def transaction_begin_commit(ztm, work):
    transaction.begin()
    try:
        work()
    except BaseException:
        transaction.abort()
        raise
    transaction.commit()


def with_manager(ztm, work):
    with transaction.manager:
        work()


def attempts(ztm, work):
    for attempt in transaction.manager.attempts(3):
        with attempt:
            work()


class OneChunk(TunableLoop):
    """A batch job of one chunk, written as Launchpad writes them: the
    chunk commits (and, with explicit begin, begins) itself."""

    maximum_chunk_size = 1
    # The loop's cool-down checks run no faster than this between chunks;
    # a retried chunk is run again at once.
    tuner_settings = {'cooldown_poll_seconds': 0.01}

    def __init__(self, ztm, work, log):
        super().__init__(log)
        self.ztm, self.work, self.done = ztm, work, False

    def isDone(self):
        return self.done

    def __call__(self, chunk_size):
        if not self.ztm.implicitBegin:
            transaction.begin()
        self.work()
        transaction.commit()
        self.done = True


def tunable_loop(ztm, work):
    stats = OneChunk(ztm, work, logging.getLogger('idioms')).run()
    assert stats.done, stats


class ScriptFailed(Exception):
    """LaunchpadScript.run_with_status() returned a failure status."""


class UnitScript(LaunchpadScript):

    def __init__(self, ztm, work):
        self.log_stream = io.StringIO()
        super().__init__('idiom-unit', test_args=[])
        self.work = work

    def main(self):
        if not self.txn.implicitBegin:
            self.txn.begin()
        self.work()
        self.txn.commit()


def script_main(ztm, work):
    script = UnitScript(ztm, work)
    status = script.run_with_status(use_lock=False)
    if status:
        raise ScriptFailed('status %d: %s' % (status,
                                             script.log_stream.getvalue()))


IDIOMS = {
    'ztm': ztm_begin_commit,
    'transaction': transaction_begin_commit,
    'with': with_manager,
    'attempts': attempts,
    'tunableloop': tunable_loop,
    'script': script_main,
}

# The idioms that run a unit again by themselves after a retryable error.
RETRYING = {'attempts', 'tunableloop'}
