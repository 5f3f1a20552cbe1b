"""Waiting on state in tests, with a timeout that fails loudly.

A test that sleeps and then asserts is slow when the machine is idle and
flaky when it is busy.  ``wait_for`` returns as soon as the state is
reached and fails the test, saying what it waited for, when it is not.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Optional

from canonical.testing.interfaces import WaitTimeout

__all__ = ['WaitTimeout', 'wait_for']

# How often a predicate nobody signals is looked at again.
_POLL_SECONDS = 0.005


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0,
             what: str = 'the condition',
             condition: Optional[threading.Condition] = None) -> Any:
    """Return the first true value of ``predicate()``, or raise WaitTimeout
    after ``timeout`` seconds.

    With ``condition``, the predicate is evaluated under it each time the
    condition is notified (no polling); otherwise it is polled.
    """
    if condition is not None:
        with condition:
            value = condition.wait_for(predicate, timeout)
    else:
        deadline = time.monotonic() + timeout
        value = predicate()
        while not value and time.monotonic() < deadline:
            time.sleep(_POLL_SECONDS)
            value = predicate()
    if not value:
        raise WaitTimeout('Timed out after %.1f s waiting for %s.'
                          % (timeout, what))
    return value
