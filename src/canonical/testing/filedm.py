"""A second, real data manager for the tests: it writes a file.

The file appears only if the transaction commits; ``fail_in`` makes one
phase of the two-phase commit fail, to show that nothing is committed
anywhere then.
"""

from __future__ import annotations

import os
from typing import Any, Optional

from transaction.interfaces import IDataManager
from zope.interface import implementer

__all__ = ['FileDataManager', 'VoteFailed']


class VoteFailed(Exception):
    """The file data manager was told to fail."""


@implementer(IDataManager)
class FileDataManager:
    """Writes ``content`` to ``path`` when the transaction commits."""

    def __init__(self, path: str, content: str,
                 fail_in: Optional[str] = None,
                 transaction_manager: Any = None) -> None:
        import transaction
        self.path = path
        self.content = content
        self.fail_in = fail_in
        self.transaction_manager = transaction_manager or transaction.manager
        self.calls: list = []
        self._tmp = path + '.tmp'

    def _step(self, name: str) -> None:
        self.calls.append(name)
        if self.fail_in == name:
            raise VoteFailed('%s failed on purpose' % name)

    def abort(self, txn: Any) -> None:
        self.calls.append('abort')
        self._discard()

    def tpc_begin(self, txn: Any) -> None:
        self._step('tpc_begin')

    def commit(self, txn: Any) -> None:
        self._step('commit')
        with open(self._tmp, 'w') as f:
            f.write(self.content)

    def tpc_vote(self, txn: Any) -> None:
        self._step('tpc_vote')

    def tpc_finish(self, txn: Any) -> None:
        self.calls.append('tpc_finish')
        os.replace(self._tmp, self.path)

    def tpc_abort(self, txn: Any) -> None:
        self.calls.append('tpc_abort')
        self._discard()

    def _discard(self) -> None:
        if os.path.exists(self._tmp):
            os.remove(self._tmp)

    def sortKey(self) -> str:
        return 'file:' + self.path
