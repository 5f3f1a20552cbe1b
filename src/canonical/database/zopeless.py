"""The Zopeless transaction manager: per-thread database transactions that
live inside the ``transaction`` package's transactions.

Each thread gets, on first use, its own IDatabaseConnection (looked up as an
adapter of the configuration, so a site can register another one), a
SQLObject connection over it, and a data manager.  ``ztm.begin()`` makes
sure the connection is alive (reconnecting, and waiting, if it is not)
before ``transaction`` begins, so a failed begin() leaves no transaction
behind.  A synchronizer registered on the thread's transaction manager
joins the database to transactions begun by ``transaction.begin()`` or by
``transaction.manager.attempts()`` as well.
"""

from __future__ import annotations

import logging
import threading
import weakref
from typing import Optional

import transaction
from transaction.interfaces import ISynchronizer
from transaction.interfaces import ITransaction
from transaction.interfaces import ITransactionManager
from transaction.interfaces import NoTransaction
from zope.component import getGlobalSiteManager
from zope.interface import implementer

from canonical.database.connection import ReconnectingConnection
from canonical.database.datamanager import ZopelessDataManager
from canonical.database.forksafety import renew_after_fork
from canonical.database.interfaces import IDatabaseConfig
from canonical.database.hosts import servers_for
from canonical.database.interfaces import IDatabaseConnection
from canonical.database.interfaces import IDatabaseStats
from canonical.database.interfaces import IDatabaseStatsProvider
from canonical.database.interfaces import IZopelessTransactionManager
from canonical.database.interfaces import NoTransactionError
from canonical.database.interfaces import NotInstalledError
from canonical.database.interfaces import TransactionInProgressError
from canonical.database.sqlbase import ZopelessSQLObjectConnection
from canonical.database.sqlbase import set_connection_source
from canonical.database import policy as policies
from canonical.database.policy import current_policy
from canonical.database.routing import route
from canonical.database.standbys import stop_all as stop_standby_monitors
from canonical.database.stats import stats_for

__all__ = ['ZopelessTransactionManager']

log = logging.getLogger('canonical.database.zopeless')


class _ThreadState:
    """What one thread owns.  No reference cycles: when the thread ends,
    its state is freed at once, and its session ends with it."""

    __slots__ = ('db', 'sqlconn', 'dm', 'tm', 'begun', 'writer', 'reader',
                 '__weakref__')

    def __init__(self, db: IDatabaseConnection) -> None:
        self.db = db
        self.sqlconn = ZopelessSQLObjectConnection(db,
                                                   debug=db.config.debug)
        self.dm = ZopelessDataManager(db, self.sqlconn, transaction.manager)
        # This thread's own manager behind the thread-local
        # transaction.manager: begin() and commit() call it directly.
        self.tm = transaction.manager.manager
        self.begun = False  # begun by ztm.begin(), not joined yet
        # db, sqlconn, dm of the writer, and of read units (routing.py).
        self.writer = (db, self.sqlconn, self.dm)
        self.reader: Optional[tuple] = None
        # Closed, not merely let go: whatever outlives the thread may still
        # hold the psycopg2 connection (an error the application kept holds
        # its cursor, the cursor its connection), and uninstall() reaches
        # the states of live threads only.
        weakref.finalize(self, db.close).atexit = False


@implementer(ISynchronizer)
class _Synchronizer:
    """Joins the database to transactions this library did not begin."""

    def __init__(self, ztm: 'ZopelessTransactionManager') -> None:
        self._ztm = weakref.ref(ztm)

    def newTransaction(self, txn: ITransaction) -> None:
        ztm = self._ztm()
        if ztm is None or not ztm.installed:
            return
        state = getattr(ztm._local, 'state', None)
        if state is not None and state.begun:
            # ztm.begin() has connected: join, the usual unit's case, here
            # rather than in one more call.
            state.begun = False
            state.dm.join(txn)
        else:
            ztm._on_new_transaction(txn)

    def beforeCompletion(self, txn: ITransaction) -> None:
        pass

    def afterCompletion(self, txn: ITransaction) -> None:
        pass


def _unregister(manager: ITransactionManager, synch: ISynchronizer) -> None:
    try:
        manager.unregisterSynch(synch)
    except KeyError:
        pass  # not registered there (that thread's was already left)


@implementer(IZopelessTransactionManager, IDatabaseStatsProvider)
class ZopelessTransactionManager:
    """See IZopelessTransactionManager."""

    def __init__(self, config: IDatabaseConfig) -> None:
        self.config = config
        self.implicitBegin = config.implicitBegin
        self.installed = True
        self._local = threading.local()
        self._states: 'weakref.WeakSet[_ThreadState]' = weakref.WeakSet()
        self._lock = threading.Lock()
        renew_after_fork(self, '_lock', threading.Lock)
        self._synch = _Synchronizer(self)
        # Registered in every thread served (registerSynch()).
        self._synchs: 'weakref.WeakSet[ISynchronizer]' = weakref.WeakSet()
        set_connection_source(self._current_sqlconn)
        # The installing thread is ready at once: transaction.begin() and
        # transaction.manager.attempts() join the database from the start.
        self._state()

    # -- per-thread set-up -------------------------------------------------

    # begin(), commit() and connection() read self._local.state first and
    # call _state() only when the thread has none: the usual case costs no
    # call, and these run in every unit.

    def _state(self) -> _ThreadState:
        state = getattr(self._local, 'state', None)
        if state is None:
            if not self.installed:
                raise NotInstalledError(
                    'This transaction manager was uninstalled; call '
                    'initZopeless() again.')
            state = _ThreadState(IDatabaseConnection(self.config, None) or
                                 ReconnectingConnection(self.config))
            # Recorded before the synchronizer is registered: registering
            # it calls newTransaction() at once for a transaction already
            # begun in this thread (by `transaction`, attempts(), a `with`
            # block), and that call must find the state, not make another.
            self._local.state = state
            with self._lock:
                self._states.add(state)
            manager = transaction.manager
            manager.explicit = not self.implicitBegin
            # Joins that transaction, if any, with explicit begin: the
            # thread's first use of the library may come inside it.
            manager.registerSynch(self._synch)
            with self._lock:
                others = list(self._synchs)
            for synch in others:
                manager.registerSynch(synch)
        return state

    def _current_sqlconn(self) -> Optional[ZopelessSQLObjectConnection]:
        state = getattr(self._local, 'state', None)
        if state is not None and state.dm.txn is not None:
            return state.sqlconn
        if not self.installed:
            return None
        if state is None:
            # A model's first use in this thread: setting the thread up
            # joins a transaction already begun in it (explicit begin).
            state = self._state()
            if state.dm.txn is not None:
                return state.sqlconn
        if not self.implicitBegin:
            return None
        self._route(state)
        state.dm.start(transaction.get())
        return state.sqlconn

    def _on_new_transaction(self, txn: ITransaction) -> None:
        try:
            state = self._local.state
        except AttributeError:
            state = self._state()
        if state.begun:
            state.begun = False
            state.dm.join(txn)
        elif not self.implicitBegin:
            try:
                self._route(state)
                state.dm.start(txn)
            except BaseException:
                # transaction.begin() has already made txn current: free
                # it, so a failed begin leaves no transaction behind.
                txn.abort()
                raise
        # implicitBegin: join lazily, when a model first needs the database

    @staticmethod
    def _route(state: _ThreadState) -> None:
        # The thread's database policy picks the connection of a unit about
        # to begin.
        policy = current_policy()
        if policy is not None or state.reader is not None:
            route(state, state.writer[0].config, policy)

    # -- IZopelessTransactionManager ----------------------------------------

    def begin(self) -> None:
        try:
            state = self._local.state
        except AttributeError:
            state = self._state()
        # Every transaction of the thread reaches the synchronizer (one in
        # progress when it was registered was joined then), so dm.txn tells
        # whether one is open: no need to ask `transaction`.
        if state.dm.txn is not None:
            raise TransactionInProgressError(
                'A transaction is already in progress in this thread; '
                'commit() or abort() it before calling begin() again.')
        if policies.ever_used or state.reader is not None:
            # (Until a policy is first used in the process, no unit can
            # be routed anywhere but the writer.)
            self._route(state)
        # Connect (or reconnect, waiting through an outage) before the
        # transaction exists, so a failure leaves nothing half begun; the
        # synchronizer then only joins.  BEGIN goes with the first statement.
        state.db.begin()
        state.begun = True
        try:
            state.tm.begin()
        except BaseException:
            state.begun = False
            if state.dm.txn is None:
                state.db.rollback()
                self._abort_quietly()
            raise

    @staticmethod
    def _abort_quietly() -> None:
        try:
            transaction.manager.abort()
        except NoTransaction:
            pass

    def commit(self) -> None:
        try:
            state = self._local.state
        except AttributeError:
            state = self._state()
        txn = state.dm.txn
        if txn is not None:
            # The thread's current transaction, joined by the synchronizer:
            # what its manager's commit() would look up.
            txn.commit()
            return
        try:
            state.tm.commit()
        except NoTransaction:
            raise NoTransactionError(
                'commit() without a transaction in this thread; call '
                'begin() first.') from None

    def abort(self) -> None:
        state = self._state()
        try:
            state.tm.abort()
        except NoTransaction:
            raise NoTransactionError(
                'abort() without a transaction in this thread; call '
                'begin() first.') from None

    def set_isolation_level(self, level: str) -> None:
        self.config = self.config.replace(isolation=level)
        with self._lock:
            states = list(self._states)
        for state in states:
            for db in [state.writer[0]] + ([state.reader[0]] if state.reader
                                           else []):
                db.set_config(self.config)

    def connection(self) -> IDatabaseConnection:
        try:
            state = self._local.state
        except AttributeError:
            state = self._state()
        if state.dm.txn is None:
            if self._current_sqlconn() is None:
                raise NoTransactionError(
                    'No transaction is in progress in this thread; call '
                    'begin() first.')
        return state.db

    def registerSynch(self, synch: ISynchronizer) -> None:
        with self._lock:
            self._synchs.add(synch)
            states = list(self._states)
        for state in states:
            state.tm.registerSynch(synch)

    def unregisterSynch(self, synch: ISynchronizer) -> None:
        with self._lock:
            self._synchs.discard(synch)
            states = list(self._states)
        for state in states:
            _unregister(state.tm, synch)

    def stats(self) -> IDatabaseStats:
        return stats_for(self.config)

    def uninstall(self) -> None:
        if not self.installed:
            return
        self._abort_quietly()
        self.installed = False
        set_connection_source(None)
        with self._lock:
            states = list(self._states)
            self._states.clear()
        left: dict = {}
        for state in states:
            # Every thread's own manager is left as it was before the
            # library: a worker thread that outlives the manager (a pool's)
            # must not stay in explicit mode, nor call our synchronizer.
            self._leave(state.tm)
            state.dm.txn = None
            if state.reader is not None:
                state.reader[0].close()
                state.db, state.sqlconn, state.dm = state.writer
            left.update(state.db.finish_deferred_now())
            state.db.close()
        for gid, commit in left.items():
            # Start-up recovery presumes commit: a gid that must be rolled
            # back needs a person.
            log.critical('Prepared transaction %s is still waiting for %s; '
                         'run it by hand.', gid, 'COMMIT PREPARED'
                         if commit else 'ROLLBACK PREPARED')
        stop_standby_monitors()
        servers_for(self.config).stop_probing()
        self._local = threading.local()
        self._leave(transaction.manager.manager)
        getGlobalSiteManager().unregisterUtility(
            self, IZopelessTransactionManager)

    def _leave(self, manager: ITransactionManager) -> None:
        """Leave a thread's ``transaction`` manager as it was before the
        library set it up (see _state())."""
        manager.explicit = False
        for synch in [self._synch] + list(self._synchs):
            _unregister(manager, synch)

    def __repr__(self) -> str:
        return '<ZopelessTransactionManager %s implicitBegin=%s%s>' % (
            self.config.describe(), self.implicitBegin,
            '' if self.installed else ' uninstalled')
