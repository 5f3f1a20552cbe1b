"""Fresh copies of the sample database for tests, demos and scripts.

The sample database is built once, from the SQL files in
``canonical/launchpad/database/sql/``, into a template database
(``launchpad_ftest_template``).  ``LaunchpadTestSetup().setUp()`` then
(re)creates ``launchpad_ftest`` from that template with
``CREATE DATABASE ... TEMPLATE``, which takes a fraction of a second, and
``tearDown()`` drops it again::

    from canonical.launchpad.ftests.harness import LaunchpadTestSetup
    setup = LaunchpadTestSetup()
    setup.setUp()
    conn = setup.connect()
    ...
    setup.tearDown()   # drops the database, closes conn

The server is the one ``canonical.testing.cluster.ensure_cluster()``
returns: the private cluster, or an existing server named by PGHOST/PGPORT.
"""

import hashlib
import os
import time

import psycopg2
import psycopg2.errors
from psycopg2 import sql

from canonical.testing.cluster import ensure_cluster

__all__ = ['LaunchpadTestSetup', 'SQL_DIR']

SQL_DIR = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    'database', 'sql')

# Serialises template builds between processes sharing one server.
_TEMPLATE_LOCK_KEY = 0x5A4F50454C455353  # "ZOPELESS"


class LaunchpadTestSetup:
    """Create and drop a copy of the sample database.

    Every setting is a class attribute, so subclasses (or keyword
    arguments) can choose another database name, user or template.
    """

    dbname = 'launchpad_ftest'
    dbuser = 'launchpad'
    template = 'launchpad_ftest_template'
    sql_dir = SQL_DIR
    sql_files = ('schema.sql', 'sampledata.sql')
    # CREATE DATABASE itself waits about 5 s for other sessions to leave the
    # template; keep retrying for this long in all before giving up.
    clone_retry_seconds = 10.0
    clone_retry_interval = 0.1

    def __init__(self, dbname=None, dbuser=None, template=None):
        if dbname is not None:
            self.dbname = dbname
        if dbuser is not None:
            self.dbuser = dbuser
        if template is not None:
            self.template = template
        self.server = None
        self._connections = []
        self._admin = None

    # -- names --------------------------------------------------------------

    def getDBName(self):
        return self.dbname

    def getDBUser(self):
        return self.dbuser

    def getTemplateName(self):
        return self.template

    @property
    def host(self):
        return self._server().host

    @property
    def port(self):
        return self._server().port

    @property
    def superuser(self):
        return self._server().superuser

    def _server(self):
        if self.server is None:
            self.server = ensure_cluster()
        return self.server

    # -- connections ----------------------------------------------------------

    def connect(self, dbname=None, user=None, autocommit=False):
        """A psycopg2 connection, closed by tearDown().

        It goes to this setup's database as its user unless told otherwise.
        """
        server = self._server()
        conn = psycopg2.connect(
            host=server.host, port=server.port,
            user=user or self.dbuser, dbname=dbname or self.dbname)
        conn.autocommit = autocommit
        self._connections.append(conn)
        return conn

    def superConnection(self, dbname='postgres'):
        """An autocommit connection as the server's superuser."""
        return self.connect(dbname=dbname, user=self.superuser,
                            autocommit=True)

    def _adminConnection(self):
        if self._admin is not None and not self._admin.closed:
            try:
                self._admin.cursor().execute('SELECT 1')
            except psycopg2.OperationalError:
                pass  # the server restarted under us: connect again
            else:
                return self._admin
        self._admin = self.superConnection()
        return self._admin

    def closeConnections(self):
        """Close every connection this setup made."""
        while self._connections:
            conn = self._connections.pop()
            if not conn.closed:
                try:
                    conn.close()
                except psycopg2.Error:
                    pass
        self._admin = None

    # -- the template ---------------------------------------------------------

    def templateChecksum(self):
        """A digest of the SQL files; a template built from others is stale."""
        digest = hashlib.sha1()
        for name in self.sql_files:
            with open(os.path.join(self.sql_dir, name), 'rb') as f:
                digest.update(name.encode() + b'\0' + f.read() + b'\0')
        return digest.hexdigest()

    def _templateMarker(self):
        return 'zopeless sample template sha1=%s' % self.templateChecksum()

    def _ensureRole(self, cur):
        cur.execute('SELECT 1 FROM pg_roles WHERE rolname = %s',
                    (self.dbuser,))
        if cur.fetchone() is None:
            cur.execute(sql.SQL('CREATE ROLE {} LOGIN CREATEDB').format(
                sql.Identifier(self.dbuser)))

    def _templateIsCurrent(self, cur):
        cur.execute(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database "
            "WHERE datname = %s", (self.template,))
        row = cur.fetchone()
        return row is not None and row[0] == self._templateMarker()

    def ensureTemplate(self):
        """Build the template database unless a complete one exists."""
        cur = self._adminConnection().cursor()
        if self._templateIsCurrent(cur):
            return False
        cur.execute('SELECT pg_advisory_lock(%s)', (_TEMPLATE_LOCK_KEY,))
        try:
            if self._templateIsCurrent(cur):
                return False  # another process built it meanwhile
            self.buildTemplate()
            return True
        finally:
            cur.execute('SELECT pg_advisory_unlock(%s)',
                        (_TEMPLATE_LOCK_KEY,))

    def buildTemplate(self):
        """(Re)build the template database from the SQL files."""
        cur = self._adminConnection().cursor()
        self._dropDatabase(cur, self.template)
        cur.execute(sql.SQL(
            "CREATE DATABASE {} OWNER {} TEMPLATE template0 "
            "ENCODING 'UTF8'").format(
                sql.Identifier(self.template), sql.Identifier(self.dbuser)))
        conn = self.connect(dbname=self.template, user=self.superuser)
        try:
            with conn.cursor() as load:
                if self.dbuser != self.superuser:
                    # Objects belong to the database user.
                    load.execute(sql.SQL('SET ROLE {}').format(
                        sql.Identifier(self.dbuser)))
                for name in self.sql_files:
                    with open(os.path.join(self.sql_dir, name),
                              encoding='utf-8') as f:
                        load.execute(f.read())
            conn.commit()
            conn.autocommit = True
            with conn.cursor() as load:
                load.execute('VACUUM FREEZE ANALYZE')
        finally:
            conn.close()
            self._connections.remove(conn)
        # Only a template carrying the marker counts as complete.
        cur.execute(sql.SQL('COMMENT ON DATABASE {} IS {}').format(
            sql.Identifier(self.template),
            sql.Literal(self._templateMarker())))

    # -- the test database ----------------------------------------------------

    def _terminateBackends(self, cur, dbname):
        cur.execute(
            'SELECT pg_terminate_backend(pid) FROM pg_stat_activity '
            'WHERE datname = %s AND pid <> pg_backend_pid()', (dbname,))

    def _rollbackPrepared(self, cur, dbname):
        """Prepared transactions a test left would keep the database from
        being dropped; they can only be ended from inside it."""
        cur.execute('SELECT gid FROM pg_prepared_xacts WHERE database = %s',
                    (dbname,))
        gids = [row[0] for row in cur.fetchall()]
        if not gids:
            return
        conn = self.connect(dbname=dbname, user=self.superuser,
                            autocommit=True)
        try:
            for gid in gids:
                conn.tpc_rollback(gid)
        finally:
            conn.close()
            self._connections.remove(conn)

    def _dropDatabase(self, cur, dbname):
        cur.execute('SELECT 1 FROM pg_database WHERE datname = %s',
                    (dbname,))
        if cur.fetchone() is None:
            return
        self._terminateBackends(cur, dbname)
        self._rollbackPrepared(cur, dbname)
        if cur.connection.server_version >= 130000:
            cur.execute(sql.SQL('DROP DATABASE IF EXISTS {} WITH (FORCE)')
                        .format(sql.Identifier(dbname)))
            return
        deadline = time.monotonic() + self.clone_retry_seconds
        while True:
            try:
                cur.execute(sql.SQL('DROP DATABASE IF EXISTS {}').format(
                    sql.Identifier(dbname)))
                return
            except psycopg2.errors.ObjectInUse:
                if time.monotonic() > deadline:
                    raise
                time.sleep(self.clone_retry_interval)
                self._terminateBackends(cur, dbname)

    def _cloneDatabase(self, cur):
        statement = sql.SQL('CREATE DATABASE {} TEMPLATE {} OWNER {}').format(
            sql.Identifier(self.dbname), sql.Identifier(self.template),
            sql.Identifier(self.dbuser))
        deadline = time.monotonic() + self.clone_retry_seconds
        while True:
            try:
                cur.execute(statement)
                return
            except psycopg2.errors.ObjectInUse:
                # "source database ... is being accessed by other users"
                if time.monotonic() > deadline:
                    raise
                time.sleep(self.clone_retry_interval)

    def setUp(self):
        """Make a fresh copy of the sample database named self.dbname."""
        self._server()
        cur = self._adminConnection().cursor()
        self._ensureRole(cur)
        self.ensureTemplate()
        self._dropDatabase(cur, self.dbname)
        self._cloneDatabase(cur)

    def dropDatabase(self):
        """Drop self.dbname (disconnecting its sessions), if it exists."""
        self._dropDatabase(self._adminConnection().cursor(), self.dbname)

    def tearDown(self):
        """Drop the database and close every connection this setup made."""
        try:
            # Our own sessions first, so the drop does not have to kill them.
            admin = self._admin
            for conn in list(self._connections):
                if conn is not admin and not conn.closed:
                    conn.close()
            self.dropDatabase()
        finally:
            self.closeConnections()
