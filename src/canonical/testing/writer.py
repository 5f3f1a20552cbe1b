"""A job that writes in a loop, for failover tests: what did it cost?

``UnitWriter`` runs units of work in a thread of its own, each inserting
one row with a unique id into ``ha_unit`` (made in the seed database by
``ReplicationLayer``), through ``transaction.manager.attempts()`` as a job
would.  It records every unit committed (with the port of the server that
took it and when) and every error an attempt met, so that a test can
assert what an event cost and check the database afterwards.  Tests wait
on its counters with ``wait_until()``, never on sleeps.
"""

from __future__ import annotations

import itertools
import threading
import time
from typing import Callable, List, NamedTuple, Optional

import transaction

from canonical.database.interfaces import IZopelessTransactionManager

__all__ = ['UnitWriter', 'Committed', 'HA_TABLE_SQL']

HA_TABLE_SQL = ('CREATE TABLE ha_unit (uid text PRIMARY KEY, '
                'port integer NOT NULL)')

_names = itertools.count(1)


class Committed(NamedTuple):
    uid: str
    port: int       # inet_server_port() of the server that took it
    at: float       # time.monotonic() when commit() returned


class UnitWriter(threading.Thread):
    """Writes units until stop(); see the module docstring."""

    def __init__(self, ztm: IZopelessTransactionManager,
                 attempts: int = 50, pause: float = 0.0) -> None:
        super().__init__(name='unit-writer-%d' % next(_names), daemon=True)
        self.ztm = ztm
        self.attempts = attempts
        self.pause = pause
        self.committed: List[Committed] = []
        self.errors: List[BaseException] = []   # one per failed attempt
        self.failed: List[BaseException] = []   # units given up
        self._stopping = threading.Event()
        self._cond = threading.Condition()

    def run(self) -> None:
        # Sets this thread up (explicit transactions, the database joined
        # to what attempts() begins) as a job's first begin() would.
        self.ztm.begin()
        self.ztm.abort()
        try:
            for n in itertools.count(1):
                if self._stopping.is_set():
                    break
                self._unit('%s-%d' % (self.name, n))
                if self.pause:
                    self._stopping.wait(self.pause)
        finally:
            with self._cond:
                self._cond.notify_all()

    def _unit(self, uid: str) -> None:
        port = None
        try:
            for attempt in transaction.manager.attempts(self.attempts):
                with attempt:
                    try:
                        port = self.ztm.connection().execute(
                            'INSERT INTO ha_unit (uid, port) VALUES (%s, '
                            'inet_server_port()) RETURNING port',
                            (uid,)).fetchone()[0]
                    except BaseException as e:
                        self._note_error(e)
                        raise
        except BaseException as e:
            if not self.errors or self.errors[-1] is not e:
                self._note_error(e)
            self.failed.append(e)
            return
        with self._cond:
            self.committed.append(Committed(uid, port, time.monotonic()))
            self._cond.notify_all()

    def _note_error(self, error: BaseException) -> None:
        with self._cond:
            self.errors.append(error)
            self._cond.notify_all()

    def wait_until(self, predicate: Callable[['UnitWriter'], bool],
                   timeout: float = 30) -> None:
        """Wait until ``predicate(self)``; AssertionError after timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self.is_alive():
                    if predicate(self):
                        return
                    raise AssertionError(
                        'writer: condition not met within %s s (%d '
                        'committed, errors %r)' % (
                            timeout, len(self.committed), self.errors[-3:]))
                self._cond.wait(min(remaining, 0.5))

    def wait_for_commits(self, count: int, port: Optional[int] = None,
                         timeout: float = 30) -> None:
        """Wait until ``count`` more units committed (on ``port``)."""
        base = len([c for c in self.committed
                    if port is None or c.port == port])
        self.wait_until(lambda w: len([
            c for c in w.committed if port is None or c.port == port])
            >= base + count, timeout)

    def stop(self) -> None:
        self._stopping.set()
        self.join(60)
        if self.is_alive():
            raise AssertionError('writer did not stop')
