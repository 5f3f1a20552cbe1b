"""The data manager's own branches, one behaviour per test, without a
database.

The collaborators are small stand-ins (dmstubs.py): the
IDatabaseConnection (``db``), which sends the transaction control, the
SQLObject connection and the transaction.  What the connection and the
database do in each case is tested against the real server
(test_txcontrol, test_reconnect_faults, the doctests); here only the data
manager's decisions are: what it asks the connection for, what it raises,
when it discards the connection and when it hands a gid over to be
settled.
"""

import unittest
from unittest import mock

import psycopg2
from sqlobject import dberrors
from transaction.interfaces import TransientError

from canonical.database.interfaces import CommitOutcomeUnknownError
from canonical.database.interfaces import DisconnectionError

from dmstubs import LOST
from dmstubs import SERVER
from dmstubs import DummyDb
from dmstubs import DummySQLConnection
from dmstubs import DummyTransaction
from dmstubs import OpaqueTransaction


class ZopelessDataManagerTests(unittest.TestCase):

    def _getTargetClass(self):
        from canonical.database.datamanager import ZopelessDataManager
        return ZopelessDataManager

    def _makeOne(self, db=None, sqlconn=None):
        return self._getTargetClass()(db or DummyDb(),
                                      sqlconn or DummySQLConnection(),
                                      transaction_manager=None)

    def _joined(self, txn=None, **db_options):
        """A data manager in a database transaction."""
        dm = self._makeOne(DummyDb(**db_options))
        dm.join(txn or DummyTransaction())
        return dm

    def _settling(self, name):
        """Record what is handed to twophase to settle by gid."""
        from canonical.database import datamanager
        recorder = mock.Mock(return_value='committed')
        patcher = mock.patch.object(datamanager, name, recorder)
        patcher.start()
        self.addCleanup(patcher.stop)
        return recorder

    def _prepared(self, **fail):
        dm = self._joined(DummyTransaction(others=1), fail=fail)
        dm.tpc_vote(dm.txn)
        return dm

    def _uncertain(self):
        dm = self._joined(DummyTransaction(others=1), fail={
            'prepare': psycopg2.OperationalError(LOST)})
        self.assertRaises(DisconnectionError, dm.tpc_vote, dm.txn)
        return dm

    # -- contracts ------------------------------------------------------

    def test_provides_its_interfaces(self):
        from transaction.interfaces import ISavepointDataManager
        from zope.interface.verify import verifyObject
        from canonical.database.interfaces import IZopelessDataManager
        dm = self._makeOne()
        self.assertTrue(verifyObject(IZopelessDataManager, dm))
        self.assertTrue(verifyObject(ISavepointDataManager, dm))

    # -- start and join -------------------------------------------------

    def test_start_begins_then_joins(self):
        dm = self._makeOne()
        txn = DummyTransaction()
        dm.start(txn)
        self.assertEqual(dm.db.begun, 1)
        self.assertEqual(txn._resources, [dm])
        self.assertIs(dm.txn, txn)

    def test_join_forgets_cached_rows(self):
        dm = self._makeOne(DummyDb())
        dm.sqlconn.cache.caches['Person'] = object()
        dm.join(DummyTransaction())
        self.assertEqual(dm.sqlconn.cache.cleared, 1)

    def test_join_leaves_an_empty_cache_alone(self):
        # Until a model is used there is nothing to forget.
        dm = self._joined()
        self.assertEqual(dm.sqlconn.cache.cleared, 0)

    def test_no_gid_before_the_vote(self):
        # Made only when a transaction is prepared: most never are.
        dm = self._joined()
        self.assertIsNone(dm.gid)

    def test_join_makes_the_models_use_this_connection(self):
        from canonical.database.sqlbase import SQLBase
        dm = self._joined()
        self.assertIs(SQLBase._connection, dm.sqlconn)
        dm.abort(dm.txn)
        self.assertIsNone(SQLBase._connection)

    # -- abort ----------------------------------------------------------

    def test_abort_rolls_back(self):
        dm = self._joined()
        dm.abort(dm.txn)
        self.assertEqual(dm.db.calls, ['rollback'])
        self.assertEqual(dm.sqlconn.expired, 1)
        self.assertIsNone(dm.txn)

    def test_abort_in_autocommit_asks_the_connection_too(self):
        # It sends nothing when no transaction is open.
        dm = self._joined(autocommit=True)
        dm.abort(dm.txn)
        self.assertEqual(dm.db.calls, ['rollback'])

    def test_abort_after_prepare_rolls_back_the_prepared_transaction(self):
        dm = self._prepared()
        dm.abort(dm.txn)
        self.assertEqual(dm.db.calls, ['prepare', 'rollback prepared'])
        self.assertIsNone(dm.gid)

    def test_abort_after_uncertain_prepare_settles_the_gid(self):
        rollback_prepared = self._settling('rollback_prepared')
        dm = self._uncertain()
        gid = dm.db.prepared_gids[0]
        dm.abort(dm.txn)
        rollback_prepared.assert_called_once_with(dm.db, gid, SERVER, None)

    # -- tpc_begin and commit -------------------------------------------

    def test_tpc_begin_sends_nothing(self):
        dm = self._joined()
        dm.tpc_begin(dm.txn)
        self.assertEqual(dm.db.calls, [])
        self.assertEqual(dm.db.executed, [])

    def test_commit_writes_dirty_lazy_instances_only(self):
        from canonical.database.sqlbase import LAZY_UPDATE_CLASSES
        dirty, clean, eager = mock.Mock(), mock.Mock(), mock.Mock()
        dirty.sqlmeta.dirty, clean.sqlmeta.dirty = True, False
        eager.sqlmeta.dirty = True
        caches = {'LazyThing': mock.Mock(),
                  'EagerThing': mock.Mock()}
        caches['LazyThing'].getAll.return_value = [dirty, clean]
        caches['EagerThing'].getAll.return_value = [eager]
        LAZY_UPDATE_CLASSES.add('LazyThing')
        self.addCleanup(LAZY_UPDATE_CLASSES.discard, 'LazyThing')
        dm = self._makeOne(sqlconn=DummySQLConnection(caches))
        dm.join(DummyTransaction())
        dm.commit(dm.txn)
        dirty.syncUpdate.assert_called_once_with()
        clean.syncUpdate.assert_not_called()
        eager.syncUpdate.assert_not_called()

    # -- tpc_vote -------------------------------------------------------

    def test_vote_in_autocommit_sends_nothing(self):
        dm = self._joined(autocommit=True)
        dm.tpc_vote(dm.txn)
        self.assertEqual(dm.db.calls, [])

    def test_vote_alone_commits_in_one_phase(self):
        dm = self._joined()
        dm.tpc_vote(dm.txn)
        self.assertEqual(dm.db.calls, ['commit'])
        self.assertIsNone(dm.gid)

    def test_vote_alone_commit_error_is_a_dberrors_error(self):
        dm = self._joined(fail={
            'commit': psycopg2.IntegrityError('duplicate key')})
        self.assertRaises(dberrors.IntegrityError, dm.tpc_vote, dm.txn)
        self.assertEqual(dm.db.discarded, [])

    def test_vote_alone_lost_commit_is_outcome_unknown(self):
        dm = self._joined(fail={'commit': psycopg2.OperationalError(LOST)})
        with self.assertRaises(CommitOutcomeUnknownError) as caught:
            dm.tpc_vote(dm.txn)
        self.assertIn('may or may not have committed', str(caught.exception))
        self.assertEqual(dm.db.discarded, [LOST])

    def test_vote_alone_on_a_connection_known_dead_is_a_definite_failure(
            self):
        # The connection says so before sending COMMIT (nothing committed):
        # the data manager passes that on, not an unknown outcome.
        dm = self._joined(fail={'commit': DisconnectionError(
            'lost before COMMIT; nothing was committed')})
        with self.assertRaises(DisconnectionError) as caught:
            dm.tpc_vote(dm.txn)
        self.assertNotIsInstance(caught.exception, CommitOutcomeUnknownError)
        self.assertIn('nothing was committed', str(caught.exception))

    def test_vote_with_others_prepares_a_new_gid(self):
        dm = self._joined(DummyTransaction(others=1))
        dm.tpc_vote(dm.txn)
        self.assertEqual(dm.db.calls, ['prepare'])
        self.assertEqual(dm.db.prepared_gids, [dm.gid])
        other = self._prepared()
        self.assertNotEqual(other.gid, dm.gid)

    def test_vote_prepares_when_the_transaction_hides_its_resources(self):
        dm = self._joined(OpaqueTransaction())
        dm.tpc_vote(dm.txn)
        self.assertEqual(dm.db.calls, ['prepare'])

    def test_vote_alone_prepares_to_resolve_commit_outcome(self):
        dm = self._joined(resolve=True)
        dm.tpc_vote(dm.txn)
        self.assertEqual(dm.db.calls, ['prepare'])

    def test_vote_lost_prepare_raises_the_connection_s_error(self):
        dm = self._uncertain()
        self.assertEqual(dm.db.discarded, [LOST])
        self.assertEqual(dm.db.calls, ['prepare'])

    def test_vote_failed_prepare_is_a_dberrors_error(self):
        dm = self._joined(DummyTransaction(others=1), fail={
            'prepare': psycopg2.ProgrammingError('no prepared xacts')})
        self.assertRaises(dberrors.ProgrammingError, dm.tpc_vote, dm.txn)
        self.assertEqual(dm.db.discarded, [])

    # -- tpc_finish -----------------------------------------------------

    def test_finish_commits_the_prepared_transaction(self):
        dm = self._prepared()
        dm.tpc_finish(dm.txn)
        self.assertEqual(dm.db.calls, ['prepare', 'commit prepared'])
        self.assertIsNone(dm.txn)
        self.assertIsNone(dm.gid)

    def test_finish_after_one_phase_sends_nothing(self):
        dm = self._joined()
        dm.tpc_vote(dm.txn)
        dm.tpc_finish(dm.txn)
        self.assertEqual(dm.db.calls, ['commit'])

    def test_nothing_prepared_nothing_to_finish(self):
        # A transaction that sent no statement prepares nothing.
        dm = self._joined(DummyTransaction(others=1), sent=False)
        dm.tpc_vote(dm.txn)
        dm.tpc_finish(dm.txn)
        self.assertEqual(dm.db.calls, ['prepare'])

    def test_finish_hands_a_failed_commit_prepared_over(self):
        commit_prepared = self._settling('commit_prepared')
        dm = self._prepared(**{
            'commit prepared': psycopg2.OperationalError(LOST)})
        db, gid = dm.db, dm.gid
        dm.tpc_finish(dm.txn)  # never raises
        self.assertEqual(db.discarded, [LOST])
        commit_prepared.assert_called_once_with(db, gid, SERVER, None)
        self.assertIsNone(dm.gid)

    # -- tpc_abort ------------------------------------------------------

    def test_tpc_abort_before_the_vote_rolls_back(self):
        dm = self._joined()
        dm.tpc_abort(dm.txn)
        self.assertEqual(dm.db.calls, ['rollback'])
        self.assertEqual(dm.sqlconn.expired, 1)

    def test_tpc_abort_after_prepare_rolls_back_prepared(self):
        dm = self._prepared()
        dm.tpc_abort(dm.txn)
        self.assertEqual(dm.db.calls, ['prepare', 'rollback prepared'])

    def test_tpc_abort_after_prepare_settles_when_rollback_fails(self):
        rollback_prepared = self._settling('rollback_prepared')
        dm = self._prepared(**{
            'rollback prepared': psycopg2.OperationalError(LOST)})
        db, gid = dm.db, dm.gid
        dm.tpc_abort(dm.txn)
        self.assertEqual(db.discarded, [LOST])
        rollback_prepared.assert_called_once_with(db, gid, SERVER, None)

    def test_tpc_abort_after_uncertain_prepare_settles_the_gid(self):
        rollback_prepared = self._settling('rollback_prepared')
        dm = self._uncertain()
        gid = dm.gid
        dm.tpc_abort(dm.txn)
        rollback_prepared.assert_called_once_with(dm.db, gid, SERVER, None)
        self.assertEqual(dm.db.calls, ['prepare'])

    def test_tpc_abort_after_an_interrupted_finish_rolls_nothing_back(self):
        rollback_prepared = self._settling('rollback_prepared')
        commit_prepared = self._settling('commit_prepared')
        commit_prepared.side_effect = KeyboardInterrupt
        dm = self._prepared(**{
            'commit prepared': psycopg2.OperationalError(LOST)})
        self.assertRaises(KeyboardInterrupt, dm.tpc_finish, dm.txn)
        dm.tpc_abort(dm.txn)  # it may have committed: never rolled back
        rollback_prepared.assert_not_called()
        self.assertNotIn('rollback prepared', dm.db.calls)
        # The connection it was prepared on is gone: a plain rollback there
        # has nothing to act on.
        self.assertEqual(dm.db.discarded, [LOST])

    # -- savepoints, sortKey, should_retry ------------------------------

    def test_savepoints_are_numbered(self):
        dm = self._joined()
        dm.savepoint()
        dm.savepoint()
        self.assertEqual(dm.db.executed, ['SAVEPOINT zopeless_sp_1',
                                          'SAVEPOINT zopeless_sp_2'])

    def test_savepoint_rollback_also_expires_cached_instances(self):
        dm = self._joined()
        savepoint = dm.savepoint()
        savepoint.rollback()
        self.assertEqual(dm.db.executed[-1],
                         'ROLLBACK TO SAVEPOINT zopeless_sp_1')
        self.assertEqual(dm.sqlconn.expired, 1)

    def test_sortKey_sorts_after_ordinary_data_managers(self):
        from canonical.testing.filedm import FileDataManager
        dm, other = self._makeOne(), self._makeOne()
        ordinary = FileDataManager('/tmp/x', '').sortKey()
        self.assertEqual(sorted([dm.sortKey(), ordinary])[-1], dm.sortKey())
        self.assertNotEqual(dm.sortKey(), other.sortKey())

    def test_should_retry_transient_errors(self):
        dm = self._makeOne()
        self.assertTrue(dm.should_retry(DisconnectionError('lost')))
        self.assertTrue(dm.should_retry(TransientError()))

    def test_should_retry_serialization_failures_and_deadlocks(self):
        class Conflict(Exception):
            def __init__(self, pgcode):
                self.pgcode = pgcode
        dm = self._makeOne()
        self.assertTrue(dm.should_retry(Conflict('40001')))
        self.assertTrue(dm.should_retry(Conflict('40P01')))

    def test_should_not_retry_other_errors(self):
        dm = self._makeOne()
        self.assertFalse(dm.should_retry(ValueError('bad')))
        self.assertFalse(dm.should_retry(
            psycopg2.IntegrityError('duplicate key')))
