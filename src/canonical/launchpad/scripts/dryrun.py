"""--dry-run: every commit becomes an abort.

A synchronizer on the thread's transaction manager sees every transaction
of the thread at the start of its commit, whichever way the commit was
called (the transaction manager, ``transaction.commit()``,
``transaction.manager.attempts()``), before any data manager is asked to
commit, and aborts it there: every data manager rolls back, and the commit
returns normally with nothing left to commit.  Given the script's
transaction manager, the guard is registered in every thread that manager
serves, so that a worker thread's commits are rolled back too.
"""

from __future__ import annotations

import inspect
import logging
from typing import Optional

import transaction
from transaction.interfaces import ISynchronizer
from transaction.interfaces import ITransaction
from transaction.interfaces import ITransactionManager
from zope.interface import implementer

from canonical.database.interfaces import IZopelessTransactionManager
from canonical.launchpad.scripts.completion import completing
from canonical.launchpad.scripts.interfaces import IDryRunGuard

__all__ = ['DryRunGuard']


@implementer(IDryRunGuard, ISynchronizer)
class DryRunGuard:
    """See IDryRunGuard."""

    def __init__(self, log: logging.Logger,
                 ztm: Optional[IZopelessTransactionManager] = None) -> None:
        self.log = log
        self.ztm = ztm
        self.rolled_back = 0
        self._manager: Optional[ITransactionManager] = None

    def install(self) -> None:
        # The calling thread's own manager, to unregister from it later.
        self._manager = transaction.manager.manager
        self._manager.registerSynch(self)
        if self.ztm is not None:
            self.ztm.registerSynch(self)
        self.log.info('Dry run: every commit will be rolled back instead.')

    def uninstall(self) -> None:
        manager, self._manager = self._manager, None
        if manager is None:
            return
        if self.ztm is not None:
            self.ztm.unregisterSynch(self)
        try:
            manager.unregisterSynch(self)
        except KeyError:
            pass  # the transaction manager's uninstall() took it already
        self.log.info('Dry run: %d commit(s) rolled back instead.',
                      self.rolled_back)

    # -- ISynchronizer -----------------------------------------------------

    def newTransaction(self, txn: ITransaction) -> None:
        pass

    def beforeCompletion(self, txn: ITransaction) -> None:
        if completing(inspect.currentframe()) != 'commit':
            return  # an abort: nothing to change
        self.rolled_back += 1
        self.log.log(logging.INFO if self.rolled_back == 1 else logging.DEBUG,
                     'Dry run: rolling back instead of committing.')
        txn.abort()

    def afterCompletion(self, txn: ITransaction) -> None:
        pass
