"""The systems of the failover section, each with its best recipe.

Every system is given the same host list (primary and standby) and
``target_session_attrs=read-write``, the libpq way of reaching whichever
server takes writes, and runs the same unit: one INSERT into ``ha_unit``
returning the server's own address and port, so that the writer knows
which server took it.

* the library: its defaults (``initZopeless`` with the host list), units
  run through ``transaction.manager.attempts()``, and run again after a
  ``CommitOutcomeUnknownError`` (a COMMIT lost with its server; the
  default ``resolve_commit_outcome=False`` does not find out);
* raw psycopg2: one connection, dropped and made again after an
  OperationalError or InterfaceError, with a 50 ms sleep: the floor;
* zope.sqlalchemy: what SQLAlchemy's documentation recommends, the
  multi-host URL (``?host=h1:p1&host=h2:p2``), ``pool_pre_ping=True`` and
  the application retrying a unit after a ``DBAPIError`` (the engine
  invalidates the pool on a disconnect), with a 50 ms sleep;
* Storm: its disconnection handling (a ``DisconnectionError`` marks the
  connection dead; the store reconnects after the rollback), the host
  list as URI options passed on to libpq, the unit retried after an
  abort and a 50 ms sleep.

The anchors and the floor run with the libpq timeouts the library sets by
default (a best recipe sets them); the anchors also run with libpq's own
defaults, reported as "(libpq defaults)".
"""

from __future__ import annotations

import itertools
import time
from typing import Dict, List, Optional, Sequence, Tuple

import psycopg2
import transaction
from transaction.interfaces import TransientError
from zope.interface import implementer

from benchmarks.interfaces import IFailoverClient, IFailoverSystem
from benchmarks.systems import RETRY_SLEEP

__all__ = ['make_failover_system', 'library_timeouts', 'available',
           'FAILOVER_SYSTEMS', 'DEFAULTS_SUFFIX', 'INSERT_SQL']

DBNAME = 'launchpad_ftest'   # the test kit's sample database (with ha_unit)
DBUSER = 'launchpad'
# The server that took the unit, as it names itself: host:port.
INSERT_SQL = ("INSERT INTO ha_unit (uid, port) VALUES (%s, "
              "inet_server_port()) RETURNING host(inet_server_addr()) || "
              "':' || port")
DEFAULTS_SUFFIX = ' (libpq defaults)'
FAILOVER_SYSTEMS = ('zopeless', 'raw-psycopg2', 'zope.sqlalchemy', 'storm',
                    'zope.sqlalchemy' + DEFAULTS_SUFFIX,
                    'storm' + DEFAULTS_SUFFIX)
# The libpq parameters that decide how fast a dead server is given up.
TIMEOUT_KEYS = ('connect_timeout', 'keepalives', 'keepalives_idle',
                'keepalives_interval', 'keepalives_count', 'tcp_user_timeout')
Hosts = Sequence[Tuple[str, int]]
_stores = itertools.count(1)


def library_timeouts() -> Dict[str, str]:
    """The libpq timeouts the library sets by default, read from it."""
    from canonical.database.config import DatabaseConfig
    config = DatabaseConfig(environ={})
    return {key: config.get(key) for key in TIMEOUT_KEYS
            if config.get(key) is not None}


class _Uncounted:
    """A system that keeps no count of its connection attempts and holds
    nothing to release."""

    def attempts(self) -> Optional[int]:
        return None

    def close(self) -> None:
        pass


class _AbortAndSleep:
    """An anchor's recipe after a failed unit: abort, sleep, run again."""

    def recover(self, error: BaseException) -> None:
        transaction.abort()
        time.sleep(RETRY_SLEEP)


# -- the library ---------------------------------------------------------------

@implementer(IFailoverSystem)
class LibrarySystem:
    name = 'zopeless'
    recipe = ('initZopeless defaults with the host list; units through '
              'transaction.manager.attempts(), run again after '
              'CommitOutcomeUnknownError')

    def __init__(self, hosts: Hosts, **ignored) -> None:
        from canonical.database.reconnect import coordinator_for
        from canonical.lp import initZopeless
        self.ztm = initZopeless(
            dbname=DBNAME, dbuser=DBUSER, implicitBegin=False,
            dbhost='%s port=%s' % (','.join(h for h, p in hosts),
                                   ','.join(str(p) for h, p in hosts)))
        self._coordinator = coordinator_for(self.ztm.config)

    def client(self) -> IFailoverClient:
        return LibraryClient(self.ztm)

    def attempts(self) -> Optional[int]:
        return self._coordinator.attempts

    def close(self) -> None:
        if self.ztm.installed:
            self.ztm.uninstall()


@implementer(IFailoverClient)
class LibraryClient:

    def __init__(self, ztm) -> None:
        from canonical.database.interfaces import CommitOutcomeUnknownError
        # attempts() runs a unit again after a TransientError.  With the
        # default resolve_commit_outcome=False a COMMIT lost with its
        # server raises CommitOutcomeUnknownError instead: the unit is run
        # again then too, as the anchors run again a unit whose COMMIT
        # failed (none of them can tell whether it committed).
        self.retry_errors = (TransientError, CommitOutcomeUnknownError)
        self.ztm = ztm
        # This thread's transactions are explicit, with the database
        # joined to what attempts() begins, as after a job's first begin().
        ztm.begin()
        ztm.abort()

    def write(self, uid: str) -> str:
        for n, attempt in enumerate(transaction.manager.attempts()):
            with attempt:
                # A COMMIT lost with its server may have committed: each
                # attempt inserts a uid of its own.
                server = self.ztm.connection().execute(
                    INSERT_SQL, ('%s.%d' % (uid, n),)).fetchone()[0]
        return server

    def recover(self, error: BaseException) -> None:
        # attempts() ended the failed attempt's transaction; begin() waits
        # for a writable server.
        pass

    def close(self) -> None:
        pass  # the connection lives as long as the thread


# -- raw psycopg2 -----------------------------------------------------------------

def _host_list(hosts: Hosts, libpq: Dict[str, str]) -> Dict[str, str]:
    """libpq's keywords for a writer of ``hosts``, with ``libpq`` besides."""
    return dict(libpq, host=','.join(h for h, p in hosts),
                port=','.join(str(p) for h, p in hosts),
                target_session_attrs='read-write')


def _libpq_kwargs(hosts: Hosts, libpq: Dict[str, str]) -> Dict[str, str]:
    return dict(_host_list(hosts, libpq), dbname=DBNAME, user=DBUSER)


@implementer(IFailoverSystem)
class RawSystem(_Uncounted):
    name = 'raw-psycopg2'
    recipe = ('one connection (host list, read-write, the library\'s '
              'timeouts), made again after an error, 50 ms sleep')

    def __init__(self, hosts: Hosts, libpq: Dict[str, str], **ignored):
        self.kwargs = _libpq_kwargs(hosts, libpq)

    def client(self) -> IFailoverClient:
        return RawClient(self.kwargs)


@implementer(IFailoverClient)
class RawClient:
    # psycopg2 2.9.2 (the oldest we support) reported a receive that
    # timed out (tcp_user_timeout) as a bare DatabaseError, where 2.9.13
    # says OperationalError: a reconnect loop must take both.
    retry_errors = (psycopg2.DatabaseError, psycopg2.InterfaceError)

    def __init__(self, kwargs: Dict[str, str]) -> None:
        self.kwargs = kwargs
        self.conn = None

    def write(self, uid: str) -> str:
        if self.conn is None:
            self.conn = psycopg2.connect(**self.kwargs)
        cur = self.conn.cursor()
        cur.execute(INSERT_SQL, (uid,))
        server = cur.fetchone()[0]
        self.conn.commit()
        return server

    def recover(self, error: BaseException) -> None:
        self.close()
        time.sleep(RETRY_SLEEP)

    def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.close()


# -- zope.sqlalchemy ------------------------------------------------------------

@implementer(IFailoverSystem)
class SQLAlchemySystem(_Uncounted):
    name = 'zope.sqlalchemy'
    recipe = ('multi-host URL, target_session_attrs=read-write, '
              'pool_pre_ping; unit retried after a DBAPIError, 50 ms sleep')

    def __init__(self, hosts: Hosts, libpq: Dict[str, str],
                 threads: int = 1) -> None:
        from sqlalchemy import create_engine, text
        from sqlalchemy.engine import URL
        from sqlalchemy.orm import scoped_session, sessionmaker
        import zope.sqlalchemy
        query: Dict[str, object] = dict(libpq)
        query['host'] = ['%s:%d' % (h, p) for h, p in hosts]
        query['target_session_attrs'] = 'read-write'
        url = URL.create('postgresql+psycopg2', username=DBUSER,
                         database=DBNAME, query=query)
        self.engine = create_engine(url, pool_pre_ping=True,
                                    pool_size=threads + 5, max_overflow=10)
        self.Session = scoped_session(sessionmaker(bind=self.engine))
        zope.sqlalchemy.register(self.Session)
        self.insert = text(INSERT_SQL.replace('%s', ':uid'))

    def client(self) -> IFailoverClient:
        return SQLAlchemyClient(self)

    def close(self) -> None:
        self.engine.dispose()


@implementer(IFailoverClient)
class SQLAlchemyClient(_AbortAndSleep):

    def __init__(self, system: SQLAlchemySystem) -> None:
        from sqlalchemy.exc import DBAPIError
        self.retry_errors = (DBAPIError,)
        self.Session = system.Session
        self.insert = system.insert

    def write(self, uid: str) -> str:
        transaction.begin()
        server = self.Session().execute(self.insert, {'uid': uid}).scalar()
        transaction.commit()
        return server

    def close(self) -> None:
        try:
            transaction.abort()
        finally:
            self.Session.remove()


# -- Storm ------------------------------------------------------------------------

@implementer(IFailoverSystem)
class StormSystem(_Uncounted):
    name = 'storm'
    recipe = ('host list as URI options (read-write); DisconnectionError, '
              'abort (the store reconnects), retry after 50 ms')

    def __init__(self, hosts: Hosts, libpq: Dict[str, str], **ignored):
        options = _host_list(hosts, libpq)
        # Storm passes URI options on to libpq's connection string.
        self.uri = 'postgres://%s@/%s?%s' % (DBUSER, DBNAME, '&'.join(
            '%s=%s' % item for item in sorted(options.items())))

    def client(self) -> IFailoverClient:
        return StormClient(self.uri)


@implementer(IFailoverClient)
class StormClient(_AbortAndSleep):

    def __init__(self, uri: str) -> None:
        from storm.exceptions import DisconnectionError, InterfaceError
        from storm.exceptions import OperationalError
        from storm.zope.zstorm import global_zstorm
        self.retry_errors = (DisconnectionError, OperationalError,
                             InterfaceError)
        self.zstorm = global_zstorm     # per thread
        self.store = global_zstorm.create('failover-%d' % next(_stores), uri)

    def write(self, uid: str) -> str:
        transaction.begin()
        server = self.store.execute(INSERT_SQL.replace('%s', '?'),
                                    (uid,)).get_one()[0]
        transaction.commit()
        return server

    def close(self) -> None:
        try:
            transaction.abort()
        finally:
            self.zstorm.remove(self.store)
            self.store.close()


_CLASSES = {'zopeless': LibrarySystem, 'raw-psycopg2': RawSystem,
            'zope.sqlalchemy': SQLAlchemySystem, 'storm': StormSystem}


def make_failover_system(name: str, hosts: Hosts,
                         threads: int = 1) -> IFailoverSystem:
    """The system ``name`` (one of FAILOVER_SYSTEMS) on ``hosts``."""
    defaults = name.endswith(DEFAULTS_SUFFIX)
    base = name[:-len(DEFAULTS_SUFFIX)] if defaults else name
    libpq = {} if defaults else library_timeouts()
    system = _CLASSES[base](hosts, libpq=libpq, threads=threads)
    if defaults:
        system.name = name
        system.recipe += '; libpq\'s own timeouts'
    return system


def available(names: Sequence[str], problems: Dict[str, str]) -> List[str]:
    """The names whose packages import (``problems`` as env.ensure_extras
    reports them)."""
    missing = set()
    if {'sqlalchemy', 'zope.sqlalchemy'} & set(problems):
        missing.add('zope.sqlalchemy')
    if {'storm', 'storm.zope.zstorm'} & set(problems):
        missing.add('storm')
    return [n for n in names
            if n.replace(DEFAULTS_SUFFIX, '') not in missing]
