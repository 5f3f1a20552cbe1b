"""The data manager: how a thread's database transaction joins `transaction`.

The data manager drives the database transaction through the declared
IDatabaseConnection methods (commit, prepare, finish_prepared, rollback),
which send the SQL.  At commit time it looks at who else joined:

* alone, it commits in tpc_vote (one phase: a plain COMMIT, no extra round
  trip), so tpc_finish has nothing left that could fail;
* with resolve_commit_outcome set, alone, it also commits in one phase: the
  transaction wrote a marker with its BEGIN (see outcomes.py), so a lost
  answer to COMMIT is settled exactly by reading it after reconnecting,
  on whatever server the library talks to then;
* with other data managers (or resolving without the marker's table) it
  votes with PREPARE TRANSACTION and finishes with COMMIT PREPARED, retried
  over reconnections until it is done.  A lost answer is then settled by
  looking the gid up in pg_prepared_xacts, which no crash can confuse: a
  gid is never reused, where a transaction id not yet on disk can be after
  a crash.  The server's timeline (see identity.py) tells whether a
  failover came in between, and the marker, when there is one, what it
  left.  The gid is the marker's token, or made when the transaction is
  prepared.

A transaction that sent no statement sends nothing at commit either.

Whether the transaction wrote through SQLObject or through raw SQL makes no
difference: the database transaction is always committed.
"""

from __future__ import annotations

import logging
from typing import Optional

import psycopg2
from transaction.interfaces import ITransaction
from transaction.interfaces import ITransactionManager
from transaction.interfaces import TransientError
from zope.interface import implementer

from canonical.database.classify import is_retryable_conflict
from canonical.database.classify import server_message
from canonical.database.classify import translate_error
from canonical.database.classify import with_sqlstate
from canonical.database.interfaces import CommitOutcomeUnknownError
from canonical.database.interfaces import DisconnectionError
from canonical.database.interfaces import IDatabaseConnection
from canonical.database.interfaces import IMeasuredConnection
from canonical.database.interfaces import IServerIdentity
from canonical.database.interfaces import TransactionLostError
from canonical.database.interfaces import IZopelessDataManager
from canonical.database.outcomes import TABLE
from canonical.database.sqlbase import LAZY_UPDATE_CLASSES
from canonical.database.sqlbase import ZopelessSQLObjectConnection
from canonical.database.sqlbase import set_active_connection
from canonical.database.twophase import COMMITTED
from canonical.database.twophase import DEFERRED
from canonical.database.twophase import NOT_COMMITTED
from canonical.database.twophase import UNKNOWN
from canonical.database.twophase import commit_prepared
from canonical.database.twophase import new_gid
from canonical.database.twophase import rollback_prepared
from canonical.database.twophase import settle

__all__ = ['ZopelessDataManager']

log = logging.getLogger('canonical.database.datamanager')


def _is_alone(txn: ITransaction) -> bool:
    # `transaction` keeps no public list of joined resources; a transaction
    # without that attribute gets the always-safe two-phase commit.
    resources = getattr(txn, '_resources', None)
    return resources is not None and len(resources) == 1


@implementer(IZopelessDataManager)
class ZopelessDataManager:
    """One thread's database transaction; see IZopelessDataManager."""

    def __init__(self, db: IDatabaseConnection,
                 sqlconn: ZopelessSQLObjectConnection,
                 transaction_manager: ITransactionManager) -> None:
        self.db = db
        self.sqlconn = sqlconn
        self.transaction_manager = transaction_manager
        self.txn: Optional[ITransaction] = None
        self.gid: Optional[str] = None
        self._transactional = False
        self._prepared = False
        self._prepare_uncertain = False
        self._finishing = False
        # Of the connection that voted: who its server was, and the slot
        # of its commit outcome marker (resolve_commit_outcome).
        self._server: Optional[IServerIdentity] = None
        self._slot: Optional[str] = None
        self._savepoints = 0
        # Each unit is counted once (see _end()).
        self._measured = IMeasuredConnection.providedBy(db)
        self._counted = True
        # Sort after ordinary data managers, so the database votes last and
        # a one-phase commit decides the transaction's outcome.
        self._sort_key = '~zopeless:%d' % id(self)

    def start(self, txn: ITransaction) -> None:
        """Begin the database transaction and join ``txn``."""
        self.db.begin()
        self.join(txn)

    def join(self, txn: ITransaction) -> None:
        """Join ``txn`` with the database transaction already begun."""
        self._transactional = not self.db.autocommit
        self.gid = None
        self._prepared = self._prepare_uncertain = self._finishing = False
        cache = self.sqlconn.cache
        if cache.caches:  # (none until a model is first used)
            cache.clear()  # no stale rows from earlier transactions
        self._counted = False
        self.txn = txn
        txn.join(self)
        set_active_connection(self.sqlconn)


    def _failed(self, error: BaseException) -> BaseException:
        """``error``, noted as what made the unit fail."""
        if self._measured:
            self.db.note_failure(error)
        return error

    def _end(self, committed: bool) -> None:
        """The unit is over: counted once, as committed or not, into the
        statistics of connections that keep them; the state reset."""
        if not self._counted and self._measured:
            self._counted = True
            if committed:
                self.db.stats.units_committed += 1
            else:
                self.db.stats.unit_ended(self.db.unit_failure)
        if self._slot is not None:
            self.db.outcomes.release(self._slot)
            self._slot = None
        set_active_connection(None)
        self.txn = None
        self.gid = None
        self._prepared = self._prepare_uncertain = self._finishing = False

    # -- IDataManager ------------------------------------------------------

    def abort(self, txn: ITransaction) -> None:
        if self._prepared or self._prepare_uncertain:
            # `transaction` calls abort() before tpc_abort() on a resource
            # whose vote failed: the (maybe) prepared gid must be settled
            # now, before the state that names it is reset.
            self.tpc_abort(txn)
            return
        try:
            self.db.rollback()
        finally:
            self.sqlconn.expireAll()
            self._end(False)

    def tpc_begin(self, txn: ITransaction) -> None:
        pass

    def commit(self, txn: ITransaction) -> None:
        # SQLObject writes at attribute assignment unless a class asked for
        # lazyUpdate: write those now, before anyone votes.
        if not LAZY_UPDATE_CLASSES:
            return
        caches = self.sqlconn.cache.allSubCachesByClassNames()
        for name in LAZY_UPDATE_CLASSES.intersection(caches):
            for instance in caches[name].getAll():
                if instance.sqlmeta.dirty:
                    instance.syncUpdate()

    def tpc_vote(self, txn: ITransaction) -> None:
        if not self._transactional:
            return  # autocommit: everything is already committed
        db = self.db
        token = db.outcome_token
        self._server = db.server
        if token is None:
            self._slot = None
            if (not db.config.resolve_commit_outcome and _is_alone(txn)) \
                    or not db.config.writes:
                # (A read unit, readers.py, has nothing to lose: one
                # phase, whoever else joined.)  _commit_one_phase(),
                # inline: the usual unit's vote.
                try:
                    db.commit()
                except psycopg2.Error as e:
                    self._one_phase_failed(e)
                return
        else:
            self._slot = db.outcome_slot
            db.outcomes.hold(self._slot)
            if _is_alone(txn) and (self._slot is not None or
                                   not db.config.resolve_commit_outcome):
                self._commit_one_phase()
                return
        # With others (or resolving without a marker): PREPARE, so a lost
        # answer is settled by looking the gid up, which (unlike a
        # transaction id after a crash) is never reused.
        self.gid = token or new_gid()
        try:
            self._prepared = self.db.prepare(self.gid)
        except psycopg2.Error as e:
            if self.db.is_disconnect(e):
                # The PREPARE may have reached the server: tpc_abort looks.
                self._prepare_uncertain = True
                self.db.prepared.decide(self.gid, False)
                self.db.discard(server_message(e))
                raise self.db.lost_in_transaction(e) from e
            raise self._failed(translate_error(e)) from e
        if self._prepared:
            # The database votes last: prepared means decided.
            self.db.prepared.decide(self.gid, True)

    def tpc_finish(self, txn: ITransaction) -> None:
        committed = False
        try:
            if self._prepared:
                self._finishing = True
                try:
                    self.db.finish_prepared(self.gid, True)
                except psycopg2.Error as e:
                    self.db.discard(server_message(e))
                    # Retried on a new connection until done, or deferred.
                    outcome = commit_prepared(self.db, self.gid,
                                              self._server, self._slot)
                    self._after_commit_prepared(outcome, e)
            committed = True
        finally:
            self._end(committed)

    def _after_commit_prepared(self, outcome: str, error: BaseException
                               ) -> None:
        if outcome in (COMMITTED, DEFERRED):
            return
        if outcome == NOT_COMMITTED:
            raise self._failed(with_sqlstate(TransactionLostError(
                'Transaction %s was prepared, then lost in a failover: %s '
                'never received it, while the other data managers committed '
                'their part.  Reconcile them by hand.'
                % (self.gid, self.db.config.describe())), error))
        raise self._failed(with_sqlstate(CommitOutcomeUnknownError(
            'The answer to COMMIT PREPARED %s was lost and a failover came '
            'in between: whether %s has the transaction cannot be told (%s).'
            % (self.gid, self.db.config.describe(), self._why_unknown())),
            error))

    def _why_unknown(self) -> str:
        if self._slot is not None:
            return 'the session that had it open held on too long'
        if not self.db.config.resolve_commit_outcome:
            return 'resolve_commit_outcome would tell'
        if self.db.outcomes.available is False:
            # Without the marker only the gid can be looked up, and a gid
            # gone from the new primary was committed or never arrived.
            return ('this role may not create the table %s, so the '
                    'transaction wrote no commit outcome marker; create it '
                    'once as its owner, as the WARNING logged at the first '
                    'connection says, and resolve_commit_outcome will tell'
                    % TABLE)
        return 'the transaction had no commit outcome marker'

    def tpc_abort(self, txn: ITransaction) -> None:
        try:
            if self._finishing:
                return  # may have committed: recovery, not rollback
            if self._prepare_uncertain:
                rollback_prepared(self.db, self.gid, self._server,
                                  self._slot)
            elif self._prepared:
                self.db.prepared.decide(self.gid, False)
                try:
                    self.db.finish_prepared(self.gid, False)
                except psycopg2.Error as e:
                    self.db.discard(server_message(e))
                    rollback_prepared(self.db, self.gid, self._server,
                                      self._slot)
            else:
                self.db.rollback()
        finally:
            self.sqlconn.expireAll()
            self._end(False)

    def sortKey(self) -> str:
        return self._sort_key

    def should_retry(self, error: BaseException) -> bool:
        return isinstance(error, TransientError) or \
            is_retryable_conflict(error)

    # -- ISavepointDataManager ---------------------------------------------

    def savepoint(self) -> 'ZopelessSavepoint':
        self._savepoints += 1
        name = 'zopeless_sp_%d' % self._savepoints
        self.db.execute('SAVEPOINT ' + name)
        return ZopelessSavepoint(self, name)

    # -- helpers -----------------------------------------------------------

    def _commit_one_phase(self) -> None:
        # A connection already known dead raises DisconnectionError here,
        # before COMMIT is sent: nothing was committed, for certain.
        try:
            self.db.commit()
        except psycopg2.Error as e:
            self._one_phase_failed(e)

    def _one_phase_failed(self, e: psycopg2.Error) -> None:
        """COMMIT raised ``e``: say what became of the transaction."""
        if not self.db.is_disconnect(e):
            raise self._failed(translate_error(e)) from e
        self.db.discard(server_message(e))
        if self._slot is not None:
            self._settle_commit(e)
            return
        if not self.db.config.writes:
            raise self._failed(self.db.lost_in_transaction(e)) from e
        raise self._failed(with_sqlstate(CommitOutcomeUnknownError(
            '%s\n(The connection to %s died while COMMIT was in flight: '
            'the transaction may or may not have committed.  Check '
            'before running it again, or set resolve_commit_outcome.)'
            % (server_message(e), self.db.config.describe())), e)) from e

    def _settle_commit(self, error: BaseException) -> None:
        """The answer to COMMIT was lost: find out from the marker, on the
        server the library talks to now, whether it committed."""
        token = self.db.outcome_token
        try:
            outcome = settle(self.db, token, True, self._server, self._slot)
        except Exception as e:  # noqa: BLE001 - reported as unknown
            outcome, why = UNKNOWN, server_message(e)
        else:
            why = 'the old session held on'
        if outcome == COMMITTED:
            return
        if outcome == NOT_COMMITTED:
            raise self._failed(with_sqlstate(DisconnectionError(
                '%s\n(The connection to %s died while COMMIT was in flight, '
                'and the transaction is not on the server now: nothing of it '
                'was committed.  Call abort(), then begin() and run it '
                'again.)' % (server_message(error),
                             self.db.config.describe())), error)) from error
        message = ('%s\n(The connection to %s died while COMMIT was in '
                   'flight and the outcome could not be looked up (%s): the '
                   'transaction may or may not have committed.)'
                   % (server_message(error), self.db.config.describe(), why))
        raise self._failed(with_sqlstate(CommitOutcomeUnknownError(message),
                                         error)) from error


class ZopelessSavepoint:
    """A SQL SAVEPOINT; rolling back to it also resets cached instances."""

    def __init__(self, dm: ZopelessDataManager, name: str) -> None:
        self.dm = dm
        self.name = name

    def rollback(self) -> None:
        self.dm.db.execute('ROLLBACK TO SAVEPOINT ' + self.name)
        self.dm.sqlconn.expireAll()
