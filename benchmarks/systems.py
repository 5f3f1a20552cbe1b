"""The systems compared: one class per system, one client per thread.

Every client offers the same transactions:

``read_sql(id)``   begin, one SELECT by id, commit
``read_orm(id)``   begin, load one Person by id with the cache cleared, commit
``write_sql(name)`` begin, INSERT one person, commit
``write_orm(name)`` begin, create one Person through the ORM, commit
``resilient_read(id)`` read_orm inside the system's best recipe for
                   surviving a database restart (used by recovery and herd)
``load_many(n)``   one transaction keeping n model instances (memory)

A client must be created, used and closed in one thread.  The library's
transaction manager registers a synchronizer on the thread's `transaction`
manager, so every system runs in threads of its own.
"""

import time

import psycopg2

SQL_READ = 'SELECT id, name, displayname, karma FROM person WHERE id = %s'
SQL_WRITE = 'INSERT INTO person (name, displayname) VALUES (%s, %s)'
RETRY_SLEEP = 0.05   # the anchors' retry sleep: the library's delay cap
SEED_SLEEP = 1.0     # the 2005 code's fixed sleep

ALL = ('raw-psycopg2', 'sqlobject-plain', 'zopeless', 'seed-2005',
       'zope.sqlalchemy', 'storm', 'psycopg2+transaction')
# Counted for round trips only: the library committing in two phases.
RESOLVED = 'zopeless-resolved'
WORKLOAD_SYSTEMS = {
    # psycopg2+transaction: the target's ceiling, not an anchor (floor.py).
    'read-sql': ('raw-psycopg2', 'zopeless', 'seed-2005', 'zope.sqlalchemy',
                 'storm', 'psycopg2+transaction'),
    'write-sql': ('raw-psycopg2', 'zopeless', 'seed-2005', 'zope.sqlalchemy',
                  'storm', 'psycopg2+transaction'),
    'read-orm': ('sqlobject-plain', 'zopeless', 'seed-2005',
                 'zope.sqlalchemy', 'storm'),
    'write-orm': ('sqlobject-plain', 'zopeless', 'seed-2005',
                  'zope.sqlalchemy', 'storm'),
}
RESILIENT = ('zopeless', 'seed-2005', 'zope.sqlalchemy', 'storm')


# ---------------------------------------------------------------------------
# SQLObject, without the library

_bench_person = None


def bench_person_class():
    """A model equivalent to canonical's Person, in its own registry."""
    global _bench_person
    if _bench_person is None:
        from sqlobject import DateTimeCol, IntCol, SQLObject, StringCol
        from sqlobject.sqlbuilder import SQLConstant

        class BenchPerson(SQLObject):
            class sqlmeta:
                table = 'person'
                defaultOrder = 'id'
                registry = 'bench'
            name = StringCol(notNull=True, alternateID=True)
            displayname = StringCol(default=None)
            givenname = StringCol(default=None)
            familyname = StringCol(default=None)
            password = StringCol(default=None)
            teamowner = IntCol(dbName='teamowner', default=None)
            karma = IntCol(notNull=True, default=0)
            datecreated = DateTimeCol(default=SQLConstant('DEFAULT'))
        _bench_person = BenchPerson
    return _bench_person


class System:
    name = None

    def __init__(self, host, port, dbname, user):
        self.host, self.port, self.dbname, self.user = host, port, dbname, user

    def dsn_kwargs(self):
        return dict(host=self.host, port=self.port, dbname=self.dbname,
                    user=self.user)

    def client(self):
        raise NotImplementedError

    def close(self):
        pass


class Client:
    def hold(self):
        """Leave the client with its connection open."""
        if hasattr(self, 'read_orm'):
            self.read_orm(1)
        else:
            self.read_sql(1)

    def close(self):
        pass


# -- raw psycopg2 -------------------------------------------------------------

class RawSystem(System):
    name = 'raw-psycopg2'

    def client(self):
        return RawClient(psycopg2.connect(**self.dsn_kwargs()))


class RawClient(Client):
    def __init__(self, conn):
        self.conn = conn

    def read_sql(self, pid):
        cur = self.conn.cursor()
        cur.execute(SQL_READ, (pid,))
        row = cur.fetchone()
        self.conn.commit()
        return row

    def write_sql(self, name):
        cur = self.conn.cursor()
        cur.execute(SQL_WRITE, (name, 'X'))
        self.conn.commit()

    def load_many(self, n):
        cur = self.conn.cursor()
        cur.execute('SELECT * FROM person ORDER BY id LIMIT %s', (n,))
        rows = cur.fetchall()
        self.conn.commit()
        return rows

    def close(self):
        self.conn.close()


# -- SQLObject alone ------------------------------------------------------------

class SQLObjectSystem(System):
    name = 'sqlobject-plain'

    def client(self):
        from sqlobject.postgres.pgconnection import PostgresConnection
        conn = PostgresConnection(
            db=self.dbname, user=self.user, host=self.host, port=self.port,
            driver='psycopg2')
        return SQLObjectClient(conn)


class SQLObjectClient(Client):
    def __init__(self, conn):
        self.conn = conn
        self.model = bench_person_class()
        self.trans = conn.transaction()

    def read_orm(self, pid):
        trans = self.trans
        trans.cache.clear()
        name = self.model.get(pid, connection=trans).name
        trans.commit()
        return name

    def write_orm(self, name):
        trans = self.trans
        trans.cache.clear()
        self.model(name=name, displayname='X', connection=trans)
        trans.commit()

    def load_many(self, n):
        trans = self.trans
        trans.cache.clear()
        model = self.model
        rows = list(model.select(model.q.id > 0, connection=trans)[:n])
        trans.commit()
        return rows

    def close(self):
        self.trans.rollback()
        self.conn.close()


# -- the library -----------------------------------------------------------------

class ZopelessSystem(System):
    name = 'zopeless'
    resolve_commit_outcome = False
    _ztm = None

    def __init__(self, *args):
        System.__init__(self, *args)
        from canonical.lp import initZopeless
        current = ZopelessSystem._ztm
        if current is not None and current.installed:
            if current.config.get('port') == str(self.port) and \
                    current.config.resolve_commit_outcome == \
                    self.resolve_commit_outcome:
                self.ztm = current
                return
            current.uninstall()
        self.ztm = ZopelessSystem._ztm = initZopeless(
            dbname=self.dbname, dbhost='%s port=%d' % (self.host, self.port),
            dbuser=self.user, implicitBegin=False, reconnect_max_delay=0.05,
            resolve_commit_outcome=self.resolve_commit_outcome)

    def coordinator(self):
        from canonical.database.reconnect import coordinator_for
        return coordinator_for(self.ztm.config)

    def client(self):
        return ZopelessClient(self.ztm)

    def close(self):
        if self.ztm.installed:
            self.ztm.uninstall()
        ZopelessSystem._ztm = None

    @classmethod
    def close_current(cls):
        """Uninstall the manager the last instance installed, if any (one
        manager at a time: the failover section installs its own)."""
        current = ZopelessSystem._ztm
        if current is not None and current.installed:
            current.uninstall()
        ZopelessSystem._ztm = None


class ZopelessResolvedSystem(ZopelessSystem):
    """The library with resolve_commit_outcome: PREPARE, COMMIT PREPARED."""
    name = RESOLVED
    resolve_commit_outcome = True


class ZopelessClient(Client):
    def __init__(self, ztm):
        from canonical.database.interfaces import DisconnectionError
        from canonical.launchpad.database import Person
        self.ztm = ztm
        self.Person = Person
        self.retry_errors = (DisconnectionError, psycopg2.OperationalError)

    def read_sql(self, pid):
        ztm = self.ztm
        ztm.begin()
        row = ztm.connection().execute(SQL_READ, (pid,)).fetchone()
        ztm.commit()
        return row

    def read_orm(self, pid):
        ztm = self.ztm
        ztm.begin()
        name = self.Person.get(pid).name
        ztm.commit()
        return name

    def write_sql(self, name):
        ztm = self.ztm
        ztm.begin()
        ztm.connection().execute(SQL_WRITE, (name, 'X'))
        ztm.commit()

    def write_orm(self, name):
        ztm = self.ztm
        ztm.begin()
        self.Person(name=name, displayname='X')
        ztm.commit()

    def resilient_read(self, pid):
        # begin() itself waits for the database; a transaction cut off
        # half-way is aborted and run again.
        while True:
            try:
                return self.read_orm(pid)
            except self.retry_errors:
                self.ztm.abort()

    def load_many(self, n):
        ztm = self.ztm
        ztm.begin()
        Person = self.Person
        rows = list(Person.select(Person.q.id > 0)[:n])
        ztm.commit()
        return rows

    def close(self):
        pass  # the connection lives as long as the thread


# -- the 2005 strategy ---------------------------------------------------------

class SeedSystem(System):
    """The seed's own strategy: each begin opens a new connection and runs
    SELECT 1, retrying forever with a fixed 1 s sleep."""
    name = 'seed-2005'

    def client(self):
        return SeedClient(self.dsn_kwargs())


def _seed_sqlobject_connection(client):
    from sqlobject.postgres.pgconnection import PostgresConnection

    class SeedSQLObjectConnection(PostgresConnection):
        def getConnection(self):
            return client.raw

        def releaseConnection(self, conn, explicit=False):
            pass

    return SeedSQLObjectConnection(dsn='', driver='psycopg2',
                                   autoCommit=False)


class SeedClient(Client):
    def __init__(self, kwargs):
        self.kwargs = kwargs
        self.raw = None
        self.model = bench_person_class()
        self.sqlconn = _seed_sqlobject_connection(self)

    def begin(self):
        while True:
            try:
                raw = psycopg2.connect(**self.kwargs)
                raw.cursor().execute('SELECT 1')
                self.raw = raw
                self.sqlconn.cache.clear()
                return raw
            except psycopg2.OperationalError:
                time.sleep(SEED_SLEEP)

    def end(self, commit=True):
        raw, self.raw = self.raw, None
        if raw is not None:
            try:
                raw.commit() if commit else raw.rollback()
            finally:
                raw.close()

    def read_sql(self, pid):
        cur = self.begin().cursor()
        cur.execute(SQL_READ, (pid,))
        row = cur.fetchone()
        self.end()
        return row

    def read_orm(self, pid):
        self.begin()
        name = self.model.get(pid, connection=self.sqlconn).name
        self.end()
        return name

    def write_sql(self, name):
        self.begin().cursor().execute(SQL_WRITE, (name, 'X'))
        self.end()

    def write_orm(self, name):
        self.begin()
        self.model(name=name, displayname='X', connection=self.sqlconn)
        self.end()

    def resilient_read(self, pid):
        while True:
            try:
                return self.read_orm(pid)
            except psycopg2.OperationalError:
                self.raw = None
                time.sleep(SEED_SLEEP)

    def load_many(self, n):
        self.begin()
        model = self.model
        rows = list(model.select(model.q.id > 0, connection=self.sqlconn)[:n])
        self.end()
        return rows

    def hold(self):
        self.begin()   # an open connection, as during a transaction
