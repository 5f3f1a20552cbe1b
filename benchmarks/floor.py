"""What no library joining `transaction` can beat: the library's SQL with
none of the library around it.

``psycopg2+transaction`` sends what the library sends for a healthy
transaction (BEGIN in the first statement's message, then COMMIT, over a
psycopg2 connection in autocommit mode: two round trips), inside a
transaction of the thread's own `transaction` manager that one data
manager has joined; that data manager's vote sends the COMMIT and nothing
else happens.  No health checks, no reconnection, no counters.

Its throughput is the ceiling of the ``>= 1.00x raw psycopg2`` target:
where it is itself below raw psycopg2, the `transaction` package's own
work costs more than the round trip the library saves, and no library
that joins `transaction` reaches the target in that run.  It runs the SQL
workloads only (read-sql, write-sql and their LAN variants).
"""

import psycopg2
import transaction
from transaction.interfaces import IDataManager
from zope.interface import implementer

from benchmarks.systems import SQL_READ, SQL_WRITE, Client, System

__all__ = ['FLOOR_SYSTEM', 'TransactionFloorSystem']

FLOOR_SYSTEM = 'psycopg2+transaction'
BEGIN = 'BEGIN ISOLATION LEVEL READ COMMITTED; '


@implementer(IDataManager)
class _CommitOnVote:
    """A data manager that sends COMMIT when it votes (as the library's
    one-phase commit does) and does nothing else."""

    def __init__(self, control, transaction_manager):
        self.control = control
        self.transaction_manager = transaction_manager

    def abort(self, txn):
        self.control.execute('ROLLBACK')

    def tpc_begin(self, txn):
        pass

    def commit(self, txn):
        pass

    def tpc_vote(self, txn):
        self.control.execute('COMMIT')

    def tpc_finish(self, txn):
        pass

    def tpc_abort(self, txn):
        self.control.execute('ROLLBACK')

    def sortKey(self):
        return 'psycopg2+transaction'


class TransactionFloorSystem(System):
    name = FLOOR_SYSTEM

    def client(self):
        conn = psycopg2.connect(**self.dsn_kwargs())
        conn.autocommit = True
        return TransactionFloorClient(conn)


class TransactionFloorClient(Client):
    def __init__(self, conn):
        self.conn = conn
        # Explicit, as the library's implicitBegin=False.
        self.tm = transaction.TransactionManager(explicit=True)
        self.dm = _CommitOnVote(conn.cursor(), self.tm)

    def read_sql(self, pid):
        txn = self.tm.begin()
        txn.join(self.dm)
        cursor = self.conn.cursor()
        cursor.execute(BEGIN + SQL_READ, (pid,))
        row = cursor.fetchone()
        txn.commit()
        return row

    def write_sql(self, name):
        txn = self.tm.begin()
        txn.join(self.dm)
        self.conn.cursor().execute(BEGIN + SQL_WRITE, (name, 'X'))
        txn.commit()

    def close(self):
        self.conn.close()
