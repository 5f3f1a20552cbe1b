"""Transaction control sent by the library itself: BEGIN with the first
statement, errors inside a transaction, isolation levels, savepoints and
the raw ways into the transaction (COPY, LISTEN, server-side cursors)."""

import io
import os
import select
import shutil
import tempfile
import threading

import psycopg2
import transaction
from psycopg2 import sql
from sqlobject import dberrors

from canonical.testing.waiting import wait_for
from canonical.database.interfaces import TransactionAbortedError
from canonical.database.rawsql import DeclaredCursor
from canonical.launchpad.database import Person
from canonical.launchpad.ftests.harness import LaunchpadTestSetup
from canonical.lp import initZopeless
from test_units import DatabaseTestCase

# What the server says of the session (pg_stat_activity.state).
IDLE = 'idle'
INTRANS = 'idle in transaction'
INERROR = 'idle in transaction (aborted)'


class TxTestCase(DatabaseTestCase):

    def setUp(self):
        self.install(implicitBegin=False)

    def install(self, **options):
        self.ztm = initZopeless(**options)
        self.ztm.begin()
        self.db = self.ztm.connection()  # this thread's, for good
        self.ztm.abort()

    def status(self):
        """The state of our session, as the server sees it."""
        cursor = self.admin()
        cursor.execute('SELECT state FROM pg_stat_activity WHERE pid = %s',
                       (self.db.backend_pid,))
        return cursor.fetchone()[0]

    def admin(self):
        setup = LaunchpadTestSetup()
        self.addCleanup(setup.closeConnections)
        return setup.superConnection('launchpad_ftest').cursor()


class TestBeginTravelsWithTheFirstStatement(TxTestCase):

    def test_begin_sends_nothing_and_the_first_statement_opens(self):
        self.ztm.begin()
        self.assertEqual(self.status(), IDLE)  # nothing sent yet
        self.assertEqual(Person.get(1).name, 'sabdfl')
        self.assertEqual(self.status(), INTRANS)
        self.ztm.commit()
        self.assertEqual(self.status(), IDLE)

    def test_work_is_transactional(self):
        self.ztm.begin()
        self.ztm.connection().execute(
            'UPDATE person SET karma = 1 WHERE id = 2')
        Person.get(3).karma = 2
        self.ztm.abort()
        cursor = self.admin()
        cursor.execute('SELECT karma FROM person WHERE id IN (2, 3) '
                       'ORDER BY id')
        self.assertEqual(cursor.fetchall(), [(235,), (12,)])

    def test_queries_in_every_form_psycopg2_takes(self):
        self.ztm.begin()
        db = self.ztm.connection()
        # '%' in a query with parameters: the BEGIN in front changes nothing
        self.assertEqual(db.execute("SELECT '100%%', %s", (1,)).fetchone(),
                         ('100%', 1))
        self.ztm.abort()
        for query, params, expected in [
                ("SELECT '100%'", None, ('100%',)),
                (b'SELECT 2', None, (2,)),
                (sql.SQL('SELECT {}').format(sql.Literal('x')), None,
                 ('x',)),
                (sql.SQL('SELECT {}, %s').format(sql.Identifier('name'))
                 + sql.SQL(' FROM person WHERE id = 1'), ('y',),
                 ('sabdfl', 'y'))]:
            self.ztm.begin()
            self.assertEqual(db.execute(query, params).fetchone(), expected)
            self.assertEqual(self.status(), INTRANS)
            self.ztm.abort()

    def test_empty_query_is_refused_as_before(self):
        self.ztm.begin()
        self.assertRaises(dberrors.ProgrammingError,
                          self.ztm.connection().execute, '')
        self.ztm.abort()

    def test_implicit_begin(self):
        self.ztm.uninstall()
        self.install()
        Person.get(1).karma = 11
        self.assertEqual(self.status(), INTRANS)
        self.ztm.commit()
        self.assertEqual(self.status(), IDLE)
        self.assertEqual(Person.get(1).karma, 11)
        self.ztm.abort()


class TestIsolationLevels(TxTestCase):

    def shown_level(self):
        return self.ztm.connection().execute(
            'SHOW transaction_isolation').fetchone()[0]

    def test_each_level_is_named_in_the_begin(self):
        for level, shown in [('read_committed', 'read committed'),
                             ('repeatable_read', 'repeatable read'),
                             ('serializable', 'serializable')]:
            self.ztm.set_isolation_level(level)
            self.ztm.begin()
            self.assertEqual(self.shown_level(), shown)
            self.ztm.abort()

    def test_the_server_default_does_not_matter(self):
        cursor = self.admin()
        cursor.execute("ALTER DATABASE launchpad_ftest SET "
                       "default_transaction_isolation = 'serializable'")
        self.ztm.uninstall()
        self.install(implicitBegin=False)
        self.ztm.begin()
        self.assertEqual(self.shown_level(), 'read committed')
        self.ztm.abort()

    def test_a_new_level_applies_from_the_next_begin(self):
        self.ztm.begin()
        self.assertEqual(self.shown_level(), 'read committed')
        self.ztm.set_isolation_level('repeatable_read')
        self.assertEqual(self.shown_level(), 'read committed')
        self.ztm.commit()
        self.ztm.begin()
        self.assertEqual(self.shown_level(), 'repeatable read')
        self.ztm.abort()

    def test_autocommit_commits_each_statement(self):
        self.ztm.set_isolation_level('autocommit')
        self.ztm.begin()
        self.ztm.connection().execute(
            'UPDATE person SET karma = 5 WHERE id = 2')
        self.assertEqual(self.status(), IDLE)
        self.ztm.abort()
        self.ztm.begin()
        self.assertEqual(Person.get(2).karma, 5)
        self.ztm.abort()


class TestStatementErrors(TxTestCase):
    """A failed statement aborts the transaction; the connection lives."""

    def check_aborted_then_fine(self, backend):
        with self.assertRaises(dberrors.InternalError) as caught:
            Person.get(2)
        self.assertIn('current transaction is aborted', str(caught.exception))
        self.ztm.abort()
        self.ztm.begin()
        self.assertEqual(Person.get(2).name, 'lifeless')
        self.assertEqual(self.ztm.connection().backend_pid, backend)
        self.ztm.commit()

    def test_first_statement_that_does_not_parse(self):
        # A message that does not parse runs nothing, its BEGIN included:
        # the transaction must still be open, and aborted.
        self.ztm.begin()
        backend = self.ztm.connection().backend_pid
        with self.assertRaises(dberrors.ProgrammingError) as caught:
            self.ztm.connection().execute('SELECT garbage invalid sql')
        self.assertIn('syntax error', str(caught.exception))
        self.assertEqual(self.status(), INERROR)
        self.check_aborted_then_fine(backend)

    def test_first_statement_that_parses_and_fails(self):
        self.ztm.begin()
        backend = self.ztm.connection().backend_pid
        with self.assertRaises(dberrors.ProgrammingError):
            self.ztm.connection().execute('SELECT * FROM no_such_table')
        self.assertEqual(self.status(), INERROR)
        self.check_aborted_then_fine(backend)

    def test_orm_first_statement_that_does_not_parse(self):
        self.ztm.begin()
        backend = self.ztm.connection().backend_pid
        with self.assertRaises(dberrors.ProgrammingError):
            list(Person.select('garbage invalid sql'))
        self.check_aborted_then_fine(backend)

    def test_later_statement(self):
        self.ztm.begin()
        backend = self.ztm.connection().backend_pid
        Person.get(1)
        with self.assertRaises(dberrors.IntegrityError):
            Person(name='sabdfl', displayname='Twice')
        self.check_aborted_then_fine(backend)

    def test_bad_parameters_leave_the_transaction_usable(self):
        # Refused by psycopg2 before anything is sent, as before.
        self.ztm.begin()
        db = self.ztm.connection()
        self.assertRaises(TypeError, db.execute, 'SELECT %s', (1, 2))
        self.assertEqual(db.execute('SELECT %s', (1,)).fetchone(), (1,))
        self.ztm.commit()

    def test_commit_after_an_error_says_nothing_was_committed(self):
        # PostgreSQL answers COMMIT of an aborted transaction with a
        # rollback and no error; commit() must not report success.
        self.ztm.begin()
        Person.get(1).karma = 1
        self.assertRaises(dberrors.ProgrammingError,
                          self.ztm.connection().execute, 'SELECT nonsense')
        with self.assertRaises(TransactionAbortedError) as caught:
            self.ztm.commit()
        self.assertIsInstance(caught.exception, dberrors.InternalError)
        self.assertEqual(caught.exception.pgcode, '25P02')
        self.assertIn('nothing was committed', str(caught.exception))
        self.ztm.abort()
        self.ztm.begin()
        self.assertEqual(Person.get(1).karma, 130)
        self.ztm.abort()

    def test_other_data_managers_do_not_commit_either(self):
        # Two-phase: the database votes last and refuses, so a data
        # manager that voted yes is rolled back with it.
        from canonical.testing.filedm import FileDataManager
        self.ztm.begin()
        Person.get(1).karma = 1
        self.assertRaises(dberrors.ProgrammingError,
                          self.ztm.connection().execute, 'SELECT nonsense')
        tmp = tempfile.mkdtemp(prefix='zopeless-test-')
        self.addCleanup(shutil.rmtree, tmp, True)
        path = os.path.join(tmp, 'report.txt')
        transaction.get().join(FileDataManager(path, 'written'))
        self.assertRaises(TransactionAbortedError, self.ztm.commit)
        self.ztm.abort()
        self.assertFalse(os.path.exists(path))
        self.ztm.begin()
        self.assertEqual(Person.get(1).karma, 130)
        self.assertEqual(self.ztm.connection().execute(
            'SELECT count(*) FROM pg_prepared_xacts').fetchone(), (0,))
        self.ztm.abort()


class TestSavepoints(TxTestCase):

    def test_savepoint_as_first_statement(self):
        self.ztm.begin()
        savepoint = transaction.savepoint()
        Person.get(2).karma = 1
        savepoint.rollback()
        self.assertEqual(Person.get(2).karma, 235)
        Person.get(2).karma = 2
        self.ztm.commit()
        self.ztm.begin()
        self.assertEqual(Person.get(2).karma, 2)
        self.ztm.abort()

    def test_rolled_back_twice_then_released_by_commit(self):
        self.ztm.begin()
        Person.get(2).karma = 1
        savepoint = transaction.savepoint()
        for karma in (2, 3):
            Person.get(2).karma = karma
            savepoint.rollback()
            self.assertEqual(Person.get(2).karma, 1)
        later = transaction.savepoint()  # kept, released at COMMIT
        Person.get(3).karma = 4
        del later
        self.ztm.commit()
        self.ztm.begin()
        self.assertEqual((Person.get(2).karma, Person.get(3).karma), (1, 4))
        self.ztm.abort()

    def test_rolling_back_to_a_savepoint_recovers_from_an_error(self):
        self.ztm.begin()
        Person.get(2).karma = 1
        savepoint = transaction.savepoint()
        self.assertRaises(dberrors.ProgrammingError,
                          self.ztm.connection().execute, 'SELECT nonsense')
        savepoint.rollback()
        self.assertEqual(self.status(), INTRANS)
        self.ztm.commit()
        self.ztm.begin()
        self.assertEqual(Person.get(2).karma, 1)
        self.ztm.abort()


class TestRawAccess(TxTestCase):

    def test_reading_raw_sends_the_begin(self):
        self.ztm.begin()
        raw = self.ztm.connection().raw
        self.assertEqual(self.status(), INTRANS)
        raw.cursor().execute('UPDATE person SET karma = 9 WHERE id = 2')
        self.ztm.abort()
        self.ztm.begin()
        self.assertEqual(Person.get(2).karma, 235)  # rolled back with it
        self.ztm.abort()

    def test_copy(self):
        self.ztm.begin()
        cursor = self.ztm.connection().raw.cursor()
        cursor.copy_expert('COPY person (name, displayname) FROM STDIN',
                           io.StringIO('copied1\tOne\ncopied2\tTwo\n'))
        out = io.StringIO()
        cursor.copy_expert("COPY (SELECT name FROM person WHERE name LIKE "
                           "'copied%' ORDER BY name) TO STDOUT", out)
        self.assertEqual(out.getvalue(), 'copied1\ncopied2\n')
        self.ztm.abort()
        self.ztm.begin()
        self.assertEqual(Person.selectBy(name='copied1').count(), 0)
        self.ztm.abort()

    def test_listen(self):
        self.ztm.begin()
        raw = self.ztm.connection().raw
        raw.cursor().execute('LISTEN zopeless_test')
        self.ztm.commit()  # LISTEN takes effect when its transaction does
        self.admin().execute("NOTIFY zopeless_test, 'hello'")
        ready, _, _ = select.select([raw], [], [], 5)
        self.assertTrue(ready)
        self.ztm.begin()  # a NOTIFY waiting in the socket is no disconnection
        self.assertEqual(self.ztm.connection().reconnects, 0)
        self.assertEqual(Person.get(1).name, 'sabdfl')
        self.ztm.abort()
        self.assertEqual([n.payload for n in raw.notifies], ['hello'])

    def test_server_side_cursor(self):
        self.ztm.begin()
        db = self.ztm.connection()
        cursor = db.cursor('people')
        self.assertIsInstance(cursor, DeclaredCursor)
        cursor.itersize = 2
        cursor.execute('SELECT id FROM person WHERE id <= %s ORDER BY id',
                       (5,))
        self.assertEqual(cursor.fetchone(), (1,))
        self.assertEqual([row[0] for row in cursor], [2, 3, 4, 5])
        names = db.execute("SELECT name FROM pg_cursors").fetchall()
        self.assertEqual(names, [('people',)])
        self.ztm.commit()
        # Declared WITHOUT HOLD: it ended with its transaction.
        self.ztm.begin()
        self.assertEqual(
            db.execute('SELECT count(*) FROM pg_cursors').fetchone(), (0,))
        cursor.close()
        self.ztm.abort()

    def test_scrollable_server_side_cursor(self):
        self.ztm.begin()
        cursor = self.ztm.connection().cursor('back', scrollable=True)
        cursor.execute('SELECT id FROM person ORDER BY id')
        cursor.fetchmany(3)
        cursor.scroll(-2)
        self.assertEqual(cursor.fetchone(), (2,))
        cursor.close()
        self.ztm.abort()

    def test_psycopg2_still_refuses_its_own_named_cursors(self):
        # Why cursor(name) exists; if psycopg2 ever accepts these, the
        # DeclaredCursor may go.
        self.ztm.begin()
        raw = self.ztm.connection().raw
        with self.assertRaises(psycopg2.ProgrammingError) as caught:
            raw.cursor('mine').execute('SELECT 1')
        self.assertIn('named cursor', str(caught.exception))
        self.ztm.abort()


class TestThreads(TxTestCase):

    def test_models_follow_the_thread(self):
        self.ztm.begin()
        Person.get(1)
        seen = []

        def other():
            seen.append(Person._connection)
            self.ztm.begin()
            seen.append(Person._connection)
            self.ztm.abort()
            seen.append(Person._connection)
        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
        mine = Person._connection
        self.assertIsNone(seen[0])
        self.assertIsNotNone(seen[1])
        self.assertIsNot(seen[1], mine)
        self.assertIsNone(seen[2])
        self.ztm.abort()
        self.assertIsNone(Person._connection)

    def test_a_kept_error_keeps_no_session_of_an_ended_thread(self):
        # A psycopg2 error keeps its cursor, and the cursor its connection;
        # an application may keep errors (to report them later, say).  The
        # session must still end with the thread, and uninstall() must
        # leave none behind.
        kept = []

        def other():
            self.ztm.begin()
            db = self.ztm.connection()
            try:
                db.execute('SELECT 1/0')
            except dberrors.Error as e:
                kept.append((db.backend_pid, e))
            self.ztm.abort()
        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
        [(pid, error)] = kept
        raw = error.__cause__.cursor.connection
        self.ztm.uninstall()
        self.assertTrue(raw.closed)
        cursor = self.admin()

        def gone():
            cursor.execute('SELECT 1 FROM pg_stat_activity WHERE pid = %s',
                           (pid,))
            return cursor.fetchone() is None
        wait_for(gone, 10, 'the session of the ended thread to end')
