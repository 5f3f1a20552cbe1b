"""What the soak's topologies (chaos/topologies/) share: the soak's
database, its creation, connections over unix sockets, and the base of the
topologies made of the test kit's ``Servers``."""

from __future__ import annotations

import os
import shutil
from typing import Any

import psycopg2

from canonical.testing.cluster.conf import PASSWORD_ROLE
from canonical.database.outcomes import CREATE_SQL

__all__ = ['DBNAME', 'MAX_CONNECTIONS', 'ServersTopology', 'create_database',
           'connect', 'seeded_servers']

DBNAME = 'chaos'
MAX_CONNECTIONS = 40


def connect(rundir: str, port: int, user: str, dbname: str = 'postgres',
            autocommit: bool = True, **kw: Any) -> Any:
    """A psycopg2 connection over a server's unix socket, which neither
    the proxy, PgBouncer nor a cut network namespace stands in front of."""
    kw.setdefault('application_name', 'chaos-admin')
    conn = psycopg2.connect(host=rundir, port=port, user=user,
                            dbname=dbname, **kw)
    conn.autocommit = autocommit
    return conn


def create_database(admin: Any, app: Any, schema: str,
                    accounts: int, opening: int) -> None:
    """The soak's database, its schema and accounts, for the workers'
    password-protected role."""
    conn = admin()
    try:
        conn.cursor().execute('DROP DATABASE IF EXISTS %s' % DBNAME)
        conn.cursor().execute('CREATE DATABASE %s OWNER launchpad' % DBNAME)
    finally:
        conn.close()
    conn = app()
    try:
        cur = conn.cursor()
        cur.execute(schema)
        # The workers' role may not create tables: the commit outcome
        # table is made by its owner, as README asks of operators, or
        # outcomes lost in a failover could not be told.
        cur.execute(CREATE_SQL)
        cur.execute('INSERT INTO chaos_account (id, balance, opening) '
                    'SELECT g, %s, %s FROM generate_series(1, %s) g',
                    (opening, opening, accounts))
        cur.execute('GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES '
                    'IN SCHEMA public TO %s; GRANT USAGE ON ALL '
                    'SEQUENCES IN SCHEMA public TO %s'
                    % (PASSWORD_ROLE, PASSWORD_ROLE))
        conn.commit()
    finally:
        conn.close()


def seeded_servers(base: str, schema: str, accounts: int,
                   opening: int) -> Any:
    """A test kit ``Servers`` whose seed (stopped) holds the soak's
    database: its primaries are copies of the seed, much faster than
    loading each again.  ``close()`` deletes the seed too."""
    from canonical.testing.cluster.replication import ReplicationNode
    from canonical.testing.servers import Servers
    servers = Servers(seed=None)
    seed = ReplicationNode(os.path.join(base, 'seed'), name='seed')
    servers.nodes.append(seed)
    servers.seed = seed
    try:
        seed.initialise()
        seed.start()
        create_database(
            lambda: connect(seed.rundir, seed.port, seed.superuser),
            lambda: connect(seed.rundir, seed.port, 'launchpad', DBNAME,
                            autocommit=False),
            schema, accounts, opening)
        seed.stop('fast')
    except BaseException:
        servers.close()
        raise
    return servers


class ServersTopology:
    """What the topologies made of the test kit's ``Servers`` share:
    servers reached over their unix sockets, and their removal.  A
    subclass says in ``stop_kept()`` how its servers stop when kept."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.servers: Any = None
        self.primary: Any = None

    def connect_to(self, node: Any, dbname: str = 'postgres',
                   **kw: Any) -> Any:
        return connect(node.rundir, node.port, node.superuser, dbname, **kw)

    def admin(self, dbname: str = 'postgres', **kw: Any) -> Any:
        return self.connect_to(self.primary, dbname, **kw)

    def app(self) -> Any:
        return connect(self.primary.rundir, self.primary.port, 'launchpad',
                       DBNAME, autocommit=False,
                       application_name='chaos-setup')

    def release(self) -> None:
        pass

    def close(self, keep: bool) -> None:
        if self.servers is None:
            return
        if keep:
            self.stop_kept()
        else:
            self.servers.close()
            shutil.rmtree(self.base, ignore_errors=True)

    def stop_kept(self) -> None:
        raise NotImplementedError
