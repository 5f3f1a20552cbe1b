"""Stopping cleanly on SIGTERM and SIGINT.

Python runs signal handlers in the main thread between two instructions,
and a handler that raises makes the interrupted code raise: a sleep or a
condition wait (begin() waiting for a lost database) ends at once.  The
first signal raises ScriptInterrupted there, unless a transaction is
committing or aborting: then it is delivered again every few milliseconds
until that is over, so a unit of work is either committed or rolled back,
never cut in the middle.  A statement already running on the server is not
cancelled: the signal takes effect when it returns.
"""

from __future__ import annotations

import _thread
import logging
import signal
import sys
import threading
from types import FrameType
from typing import Any, Callable, Dict, Iterable, Optional

from zope.interface import implementer

from canonical.launchpad.scripts.completion import completing
from canonical.launchpad.scripts.interfaces import IInterruptHandler
from canonical.launchpad.scripts.interfaces import ScriptInterrupted

__all__ = ['InterruptHandler', 'SIGNALS']

SIGNALS = (signal.SIGTERM, signal.SIGINT)

# How soon a signal deferred by a commit is delivered again.
_REDELIVERY_SECONDS = 0.005


@implementer(IInterruptHandler)
class InterruptHandler:
    """See IInterruptHandler."""

    def __init__(self, log: logging.Logger,
                 shielded: Iterable[Callable[..., Any]] = ()) -> None:
        self.log = log
        # Functions whose own instructions a signal must not land in: it
        # is delivered again a moment later, when they have moved on.
        self.shielded = frozenset(function.__code__ for function in shielded)
        self.received: Optional[int] = None
        self.raised = False
        self.deferred = False
        self.stopping = False
        self._previous: Dict[int, Any] = {}
        self._lock = threading.RLock()
        self._timer: Optional[threading.Timer] = None
        self._again = False  # the next call is a delivery of ours

    def install(self) -> bool:
        if threading.current_thread() is not threading.main_thread():
            self.log.debug('Not in the main thread: signals left alone.')
            return False
        self.received, self.raised, self.deferred = None, False, False
        self.stopping = False
        for signum in SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        return True

    def uninstall(self) -> None:
        with self._lock:
            self.stopping = True
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            previous, self._previous = self._previous, {}
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: Optional[FrameType]) -> None:
        name = signal.Signals(signum).name
        again, self._again = self._again, False
        if self.received is None:
            self.received = signum
            self.log.info('Received %s: stopping.', name)
        elif not again:
            self.log.info('Received %s%s.', name, ' again: already stopping'
                          if self.raised or self.stopping else '')
        if self.stopping or self.raised:
            return
        if frame is not None and frame.f_code in self.shielded:
            self._deliver_again(signum)
            return
        what = completing(frame)
        if what is not None:
            if not self.deferred:
                self.deferred = True
                self.log.info('%s arrived during a transaction %s: letting '
                              'it finish first.', name, what)
            self._deliver_again(signum)
            return
        self.raised = True
        raise ScriptInterrupted(self.received)  # the first, if several

    def _deliver_again(self, signum: int) -> None:
        with self._lock:
            if self._timer is not None or self.stopping:
                return
            self._timer = threading.Timer(_REDELIVERY_SECONDS, self._fire,
                                          (signum,))
            self._timer.daemon = True
            self._timer.start()

    def _fire(self, signum: int) -> None:
        with self._lock:
            self._timer = None
            if not self.stopping:
                self._again = True
                # Runs this handler again in the main thread; no OS signal,
                # so nothing can reach a default handler restored meanwhile.
                # (Python 3.9 can only simulate SIGINT, which is ours too.)
                if sys.version_info >= (3, 10):
                    _thread.interrupt_main(signum)
                else:
                    _thread.interrupt_main()
