"""Transactions ending: whether the running code is inside a commit or an
abort, and aborting without fuss.

Signals are delivered between two Python instructions, anywhere; a commit
cut in the middle could leave its outcome unknown to the script.  The
interrupt handler asks this module whether a commit or an abort is on the
stack and, if so, lets it finish first.  The dry-run guard asks it whether
the transaction calling it is committing or aborting.
"""

from __future__ import annotations

from types import FrameType
from typing import Optional

import transaction
from transaction import Transaction
from transaction.interfaces import NoTransaction

__all__ = ['completing', 'abort_quietly']

_CODES = {Transaction.commit.__code__: 'commit',
          Transaction.abort.__code__: 'abort'}


def completing(frame: Optional[FrameType]) -> Optional[str]:
    """'commit' or 'abort' when ``frame`` runs inside Transaction.commit()
    or Transaction.abort() (the innermost of them), else None."""
    while frame is not None:
        what = _CODES.get(frame.f_code)
        if what is not None:
            return what
        frame = frame.f_back
    return None


def abort_quietly() -> None:
    """Abort this thread's transaction, if it has one."""
    try:
        transaction.abort()
    except NoTransaction:
        pass
