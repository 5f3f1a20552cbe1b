"""SQLObject on top of the reconnecting connection.

``SQLBase`` is the base of all models.  Its ``_connection`` is a per-thread
descriptor: it gives the thread's SQLObject connection while the thread has
a transaction, and ``None`` otherwise (with ``implicitBegin=False``), as in
the original.  Using a model without a transaction raises
NoTransactionError, an AttributeError that says what to do.
"""

from __future__ import annotations

import logging
from typing import Any, Optional

import psycopg2
from sqlobject import SQLObject
from sqlobject import classregistry
from sqlobject import dberrors
from sqlobject.postgres.pgconnection import PostgresConnection

from canonical.database.interfaces import DisconnectionError
from canonical.database.interfaces import InvalidValueError
from canonical.database.interfaces import NoTransactionError
from canonical.database.interfaces import ZopelessError

sql_log = logging.getLogger('canonical.database.sql')

__all__ = ['SQLBase', 'ZopelessSQLObjectConnection',
           'ZopelessConnectionDescriptor', 'set_connection_source',
           'LAZY_UPDATE_CLASSES']


class ZopelessSQLObjectConnection(PostgresConnection):
    """A SQLObject connection that runs every query on its thread's
    IDatabaseConnection, inside the transaction the data manager drives.

    It has no pool and never commits or rolls back by itself.
    """

    def __init__(self, db: Any, debug: bool = False) -> None:
        self._db = db
        PostgresConnection.__init__(self, dsn='', driver='psycopg2',
                                    autoCommit=False, debug=debug)
        # DBConnection registers a callback holding this connection for ever
        # (for the conn.ClassName convenience, unused here): drop it, so a
        # thread's connection dies with the thread.
        callbacks = classregistry.registry(self.registry).genericCallbacks
        callbacks[:] = [entry for entry in callbacks
                        if getattr(entry[0], '__self__', None) is not self]

    def soClassAdded(self, soClass: Any) -> None:
        pass

    def printDebug(self, conn: Any, s: Any, name: str,
                   type: str = 'query') -> None:
        # SQLObject numbers pooled connections and prints; there is no pool
        # here, and a library logs.
        if name != 'Pool':
            sql_log.debug('%s: %s', name, s)

    def makeConnection(self) -> Any:
        raise NoTransactionError(
            'No transaction is in progress in this thread; call begin() '
            'first.')

    def getConnection(self) -> Any:
        raw = self._db.raw
        if raw is None:
            raise DisconnectionError(
                'The database connection of this thread is gone; abort() '
                'and begin() again.')
        return raw

    def releaseConnection(self, conn: Any, explicit: bool = False) -> None:
        pass  # the data manager ends the transaction, not each query

    def _runWithConnection(self, meth: Any, *args: Any) -> Any:
        raw = self.getConnection()
        try:
            return meth(raw, *args)
        except (psycopg2.Error, dberrors.Error) as e:
            if isinstance(e, ZopelessError):
                raise
            # Disconnections and read-only servers become the library's
            # errors; SQLObject's translations get their SQLSTATE back.
            error = self._db.statement_error(e)
            if error is e:
                raise
            raise error from e

    def _queryInsertID(self, conn: Any, soInstance: Any, id: Any,
                       names: list, values: list) -> Any:
        # One round trip instead of SQLObject's two: the INSERT returns the
        # new row (server defaults included), which SQLBase._init uses
        # instead of reading it back with a SELECT.
        meta = soInstance.sqlmeta
        if id is not None:
            names, values = [meta.idName] + names, [id] + values
        if names:
            query = self._insertSQL(meta.table, names, values)
        else:
            query = 'INSERT INTO %s DEFAULT VALUES' % meta.table
        columns = [meta.idName] + [col.dbName for col in meta.columnList]
        cursor = conn.cursor()
        self._executeRetry(conn, cursor,
                           query + ' RETURNING ' + ', '.join(columns))
        row = cursor.fetchone()
        cursor.close()
        soInstance._zopeless_inserted = tuple(row[1:])
        return row[0]

    def iterSelect(self, select: Any) -> Any:
        return self._runWithConnection(
            lambda raw: select.IterationClass(self, raw, select,
                                              keepConnection=True))

    def close(self) -> None:
        pass  # the IDatabaseConnection owns the psycopg2 connection

    def __repr__(self) -> str:
        return '<ZopelessSQLObjectConnection %r>' % (self._db,)


# Set by the transaction manager when it is installed: a callable returning
# the current thread's SQLObject connection or None.
_source: Optional[Any] = None


def set_connection_source(source: Optional[Any]) -> None:
    """Install (or, with None, remove) the per-thread connection provider."""
    global _source
    _source = source


class ZopelessConnectionDescriptor:
    """``Model._connection``: the thread's connection, or None."""

    def __get__(self, instance: Any, owner: Any = None) -> Any:
        source = _source
        if source is None:
            return None
        return source()

    def __set__(self, instance: Any, value: Any) -> None:
        raise AttributeError(
            'The connection of a model is chosen per thread by the '
            'transaction manager; it cannot be set on %r.' % (instance,))


def _require(cls: Any, connection: Any) -> Any:
    connection = connection or cls._connection
    if connection is None:
        raise NoTransactionError(
            'No transaction is in progress in this thread, so %s cannot '
            'use the database: call ztm.begin() first.' % cls.__name__)
    return connection


def _check_text(cls: Any, name: str, value: Any) -> None:
    """Refuse, with a clear error, text PostgreSQL cannot store as given."""
    if not isinstance(value, str):
        return
    if '\x00' in value:
        raise InvalidValueError(
            '%s.%s cannot contain NUL characters: PostgreSQL text does not '
            'store them.  Strip them, or use a bytea column.'
            % (cls.__name__, name))
    try:
        value.encode('utf-8')
    except UnicodeEncodeError as e:
        raise InvalidValueError(
            '%s.%s is not valid Unicode (%s at position %d); decode the input '
            'properly first.' % (cls.__name__, name, e.reason, e.start)) \
            from None


# Names of the models that asked for lazyUpdate: only their cached
# instances need looking at when a transaction commits.
LAZY_UPDATE_CLASSES: set = set()


class SQLBase(SQLObject):
    """Base class of all models."""

    _connection = ZopelessConnectionDescriptor()

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if getattr(cls.sqlmeta, 'lazyUpdate', False):
            LAZY_UPDATE_CLASSES.add(cls.__name__)

    @classmethod
    def get(cls, id: Any, connection: Any = None,
            selectResults: Any = None) -> Any:
        return super().get(id, _require(cls, connection), selectResults)

    @classmethod
    def select(cls, *args: Any, **kw: Any) -> Any:
        kw['connection'] = _require(cls, kw.get('connection'))
        return super().select(*args, **kw)

    @classmethod
    def selectBy(cls, connection: Any = None, **kw: Any) -> Any:
        return super().selectBy(_require(cls, connection), **kw)

    @classmethod
    def _SO_fetchAlternateID(cls, name: str, dbName: str, value: Any,
                             connection: Any = None,
                             idxName: Any = None) -> Any:
        return super()._SO_fetchAlternateID(
            name, dbName, value, _require(cls, connection), idxName)

    @classmethod
    def delete(cls, id: Any, connection: Any = None) -> Any:
        return super().delete(id, _require(cls, connection))

    def _init(self, id: Any, connection: Any = None,
              selectResults: Any = None) -> None:
        if selectResults is None:
            # The row a just-made INSERT returned: no SELECT needed.
            selectResults = self.__dict__.pop('_zopeless_inserted', None)
        super()._init(id, connection, selectResults)

    def _create(self, id: Any, **kw: Any) -> Any:
        _require(type(self), kw.get('connection'))
        for name, value in kw.items():
            _check_text(type(self), name, value)
        return super()._create(id, **kw)

    def _SO_setValue(self, name: str, value: Any, from_python: Any,
                     to_python: Any) -> None:
        _check_text(type(self), name, value)
        super()._SO_setValue(name, value, from_python, to_python)

    def set(self, _suppress_set_sig: bool = False, **kw: Any) -> None:
        for name, value in kw.items():
            _check_text(type(self), name, value)
        super().set(_suppress_set_sig=_suppress_set_sig, **kw)
