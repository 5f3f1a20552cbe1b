"""The SQL the library sends on a raw psycopg2 connection outside the
statements of a transaction: the BEGIN of each isolation level (and the
first statement joined to it), finishing a prepared transaction, a quiet
rollback, and the server-side cursor of a library transaction.
txcontrol.py sends them.

Raw access
----------
Reading ``raw`` in a transaction whose BEGIN has not gone out sends it
alone (one round trip of its own, on that path only), so COPY, LISTEN and
other direct work on the psycopg2 connection belongs to the transaction.
psycopg2 refuses named cursors in autocommit mode ("can't use a named
cursor outside of transactions"); ``cursor(name)`` gives a
``DeclaredCursor`` instead, which declares itself WITHOUT HOLD in the
transaction and is then fetched from by psycopg2 like any cursor declared
elsewhere: it ends with the transaction, as psycopg2's own named cursors
do.  A WITH HOLD cursor, which psycopg2 would accept, would be copied out
at COMMIT and outlive the transaction.
"""

from __future__ import annotations

from typing import Any, Optional, Union

import psycopg2
import psycopg2.extensions
from psycopg2 import sql

__all__ = ['RawConnection', 'Cursor', 'Query', 'DeclaredCursor',
           'begin_statement', 'with_begin', 'finish_prepared',
           'rollback_quietly']

RawConnection = psycopg2.extensions.connection
Cursor = psycopg2.extensions.cursor
# What psycopg2 executes; None stands for "the BEGIN alone".
Query = Union[str, bytes, sql.Composable]
_IDLE = psycopg2.extensions.TRANSACTION_STATUS_IDLE

_BEGIN = {
    'read_committed': 'BEGIN ISOLATION LEVEL READ COMMITTED',
    'repeatable_read': 'BEGIN ISOLATION LEVEL REPEATABLE READ',
    'serializable': 'BEGIN ISOLATION LEVEL SERIALIZABLE',
}


def begin_statement(isolation: str) -> Optional[str]:
    """The BEGIN that opens a transaction at ``isolation``; None in
    autocommit mode."""
    return _BEGIN.get(isolation)


def with_begin(begin: str, query: Optional[Query]) -> Query:
    """``query`` as one message after ``begin``; None means BEGIN alone."""
    if query is None:
        return begin
    if isinstance(query, str):
        # An empty query stays empty: psycopg2 refuses it as before.
        return begin + '; ' + query if query else query
    if isinstance(query, sql.Composable):
        return sql.SQL(begin + '; ') + query
    if isinstance(query, bytes):
        return begin.encode('ascii') + b'; ' + query if query else query
    return query  # psycopg2 raises its own TypeError


def finish_prepared(raw: RawConnection, gid: str, commit: bool) -> None:
    """COMMIT PREPARED (or ROLLBACK PREPARED) ``gid`` on ``raw``, which
    has no transaction open; driver errors propagate."""
    raw.cursor().execute(
        'COMMIT PREPARED %s' if commit else 'ROLLBACK PREPARED %s', (gid,))


def rollback_quietly(raw: RawConnection) -> None:
    """Roll back whatever the library connection ``raw`` has open; a
    connection that cannot is left for its owner to discard."""
    if raw.closed:
        return
    try:
        if raw.get_transaction_status() != _IDLE:
            raw.cursor().execute('ROLLBACK')
    except psycopg2.Error:
        pass


class DeclaredCursor(psycopg2.extensions.cursor):
    """A server-side cursor of the library's transaction.

    execute() sends ``DECLARE <name> CURSOR WITHOUT HOLD FOR <query>``
    itself (psycopg2 would refuse on an autocommit connection); fetching,
    iterating, scroll() and close() are psycopg2's, as for a cursor
    declared elsewhere.
    """

    def execute(self, query: Query, vars: Any = None) -> None:
        conn = self.connection
        scroll = {None: '', True: 'SCROLL ', False: 'NO SCROLL '}[
            self.scrollable]
        head = sql.SQL('DECLARE {} %sCURSOR WITHOUT HOLD FOR ' % scroll
                       ).format(sql.Identifier(self.name)).as_string(conn)
        encoding = psycopg2.extensions.encodings[conn.encoding]
        conn.cursor().execute(head.encode(encoding) +
                              self.mogrify(query, vars))
