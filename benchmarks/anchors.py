"""The anchors: zope.sqlalchemy over the SQLAlchemy ORM (pool_pre_ping) and
Storm with its zope integration (storm.zope.zstorm).  Both join the
`transaction` package's transactions, like the library."""

import itertools
import time

import psycopg2
import transaction

from benchmarks.systems import (Client, RETRY_SLEEP, SQL_READ, SQL_WRITE,
                                System)

_counter = itertools.count(1)

# -- zope.sqlalchemy ----------------------------------------------------------

_sa_model = None


def sa_person_class():
    global _sa_model
    if _sa_model is None:
        from sqlalchemy import DateTime, FetchedValue, Integer, String
        from sqlalchemy.orm import DeclarativeBase, mapped_column

        class Base(DeclarativeBase):
            pass

        class SAPerson(Base):
            __tablename__ = 'person'
            id = mapped_column(Integer, primary_key=True)
            name = mapped_column(String, nullable=False)
            displayname = mapped_column(String)
            givenname = mapped_column(String)
            familyname = mapped_column(String)
            password = mapped_column(String)
            teamowner = mapped_column(Integer)
            karma = mapped_column(Integer, nullable=False, default=0)
            datecreated = mapped_column(DateTime,
                                        server_default=FetchedValue())
        _sa_model = SAPerson
    return _sa_model


class ZopeSQLAlchemySystem(System):
    name = 'zope.sqlalchemy'

    def __init__(self, *args):
        System.__init__(self, *args)
        from sqlalchemy import create_engine
        from sqlalchemy.orm import scoped_session, sessionmaker
        import zope.sqlalchemy
        self.engine = create_engine(
            'postgresql+psycopg2://%s@%s:%d/%s' % (
                self.user, self.host, self.port, self.dbname),
            pool_pre_ping=True, pool_size=60, max_overflow=20)
        self.Session = scoped_session(sessionmaker(bind=self.engine))
        zope.sqlalchemy.register(self.Session)

    def client(self):
        return SAClient(self)

    def close(self):
        self.engine.dispose()


class RetryingClient(Client):
    """The anchors' recipe for outages: abort and retry with a sleep
    (SQLAlchemy also pre-pings at checkout; Storm reconnects on the use
    after a DisconnectionError)."""

    retry_errors: tuple = ()

    def resilient_read(self, pid):
        while True:
            try:
                return self.read_orm(pid)
            except self.retry_errors:
                transaction.abort()
                time.sleep(RETRY_SLEEP)


class SAClient(RetryingClient):
    def __init__(self, system):
        from sqlalchemy import text
        from sqlalchemy.exc import DBAPIError
        self.Session = system.Session
        self.model = sa_person_class()
        self.read_text = text(SQL_READ.replace('%s', ':id'))
        self.write_text = text(SQL_WRITE % (':name', ':dn'))
        self.retry_errors = (DBAPIError, psycopg2.Error)

    def read_sql(self, pid):
        transaction.begin()
        row = self.Session().execute(self.read_text, {'id': pid}).fetchone()
        transaction.commit()
        return row

    def read_orm(self, pid):
        transaction.begin()
        # zope.sqlalchemy closes the session at commit: the identity map
        # starts empty in every transaction.
        name = self.Session().get(self.model, pid).name
        transaction.commit()
        return name

    def write_sql(self, name):
        transaction.begin()
        self.Session().execute(self.write_text, {'name': name, 'dn': 'X'})
        transaction.commit()

    def write_orm(self, name):
        transaction.begin()
        self.Session().add(self.model(name=name, displayname='X', karma=0))
        transaction.commit()

    def load_many(self, n):
        transaction.begin()
        model = self.model
        rows = self.Session().query(model).order_by(model.id).limit(n).all()
        # Keep the session (and its identity map) until the caller is done.
        transaction.get().doom()
        return rows

    def close(self):
        try:
            transaction.abort()
        finally:
            self.Session.remove()


# -- Storm ------------------------------------------------------------------------

_storm_model = None


def storm_person_class():
    global _storm_model
    if _storm_model is None:
        from storm.locals import DateTime, Int, Storm, Unicode

        class StormPerson(Storm):
            __storm_table__ = 'person'
            id = Int(primary=True)
            name = Unicode()
            displayname = Unicode()
            givenname = Unicode()
            familyname = Unicode()
            password = Unicode()
            teamowner = Int()
            karma = Int()
            datecreated = DateTime()
        _storm_model = StormPerson
    return _storm_model


class StormSystem(System):
    name = 'storm'

    def __init__(self, *args):
        System.__init__(self, *args)
        self.uri = 'postgres://%s@%s:%d/%s' % (self.user, self.host,
                                               self.port, self.dbname)

    def client(self):
        return StormClient(self.uri)


class StormClient(RetryingClient):
    def __init__(self, uri):
        from storm.exceptions import DisconnectionError, OperationalError
        from storm.zope.zstorm import global_zstorm
        self.zstorm = global_zstorm     # per thread
        self.store_name = 'bench-%d' % next(_counter)
        self.store = global_zstorm.create(self.store_name, uri)
        self.model = storm_person_class()
        self.retry_errors = (DisconnectionError, OperationalError,
                             psycopg2.Error)

    def read_sql(self, pid):
        transaction.begin()
        # Storm's raw SQL takes '?' parameter marks.
        row = self.store.execute(SQL_READ.replace('%s', '?'),
                                 (pid,)).get_one()
        transaction.commit()
        return row

    def read_orm(self, pid):
        transaction.begin()
        store = self.store
        store.reset()     # an empty cache, as for the other systems
        name = store.get(self.model, pid).name
        transaction.commit()
        return name

    def write_sql(self, name):
        transaction.begin()
        self.store.execute(SQL_WRITE.replace('%s', '?'), (name, 'X'),
                           noresult=True)
        transaction.commit()

    def write_orm(self, name):
        transaction.begin()
        self.store.reset()
        person = self.model()
        person.name = name
        person.displayname = 'X'
        person.karma = 0
        self.store.add(person)
        transaction.commit()

    def load_many(self, n):
        transaction.begin()
        self.store.reset()
        model = self.model
        rows = list(self.store.find(model, model.id > 0)
                    .order_by(model.id)[:n])
        transaction.commit()
        return rows

    def close(self):
        try:
            transaction.abort()
        finally:
            self.zstorm.remove(self.store)
            self.store.close()


def make_system(name, host, port, dbname, user):
    from benchmarks import systems
    from benchmarks.floor import FLOOR_SYSTEM, TransactionFloorSystem
    classes = {
        FLOOR_SYSTEM: TransactionFloorSystem,
        'raw-psycopg2': systems.RawSystem,
        'sqlobject-plain': systems.SQLObjectSystem,
        'zopeless': systems.ZopelessSystem,
        systems.RESOLVED: systems.ZopelessResolvedSystem,
        'seed-2005': systems.SeedSystem,
        'zope.sqlalchemy': ZopeSQLAlchemySystem,
        'storm': StormSystem,
    }
    return classes[name](host, port, dbname, user)
