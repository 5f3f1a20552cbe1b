"""The ``<db:database>`` ZCML directive: declare the database in ZCML.

::

  <configure xmlns:db="http://namespaces.canonical.com/zopeless">
    <include package="canonical.database" file="meta.zcml" />
    <db:database dbname="launchpad_prod" dbhost="db1 port=5433"
                 dbuser="cron" isolation="serializable"
                 reconnectTimeout="600" />
  </configure>

The handler only records an action; the configuration is built and
registered as the IDatabaseConfig utility when the actions run, so a
malformed setting is reported with the ZCML file and line.
"""

from __future__ import annotations

from typing import Any, Optional

from zope.component import provideUtility
from zope.interface import Interface
from zope.schema import Bool
from zope.schema import Float
from zope.schema import TextLine

from canonical.database.config import DatabaseConfig
from canonical.database.interfaces import IDatabaseConfig

__all__ = ['IDatabaseDirective', 'database', 'register_database']


class IDatabaseDirective(Interface):
    """Declare the database scripts of this site use."""

    dsn = TextLine(title='libpq DSN or postgresql:// URI', required=False)
    dbname = TextLine(title='Database name', required=False)
    dbhost = TextLine(
        title='Host, optionally followed by libpq keywords',
        description='For example "localhost port=5433 sslmode=require".',
        required=False)
    dbuser = TextLine(title='Database user', required=False)
    isolation = TextLine(title='Isolation level', required=False,
                         default='read_committed')
    implicitBegin = Bool(title='Keep a transaction always open',
                         required=False, default=True)
    reconnectTimeout = Float(
        title='Seconds begin() waits for a lost database (default: ever)',
        required=False)
    resolveCommitOutcome = Bool(
        title='Resolve commits cut off by a disconnection', required=False,
        default=False)
    maxUsableLag = Float(
        title='Seconds a standby may lag and still run read units',
        required=False)
    standbyCatchUpTimeout = Float(
        title="Seconds a read unit waits for a standby to replay this "
              "process's last commit", required=False)


def register_database(settings: dict) -> None:
    """Build the configuration and register it (an action callable)."""
    provideUtility(DatabaseConfig(**settings), IDatabaseConfig)


def database(_context: Any, dsn: Optional[str] = None,
             dbname: Optional[str] = None, dbhost: Optional[str] = None,
             dbuser: Optional[str] = None,
             isolation: str = 'read_committed', implicitBegin: bool = True,
             reconnectTimeout: Optional[float] = None,
             resolveCommitOutcome: bool = False,
             maxUsableLag: Optional[float] = None,
             standbyCatchUpTimeout: Optional[float] = None) -> None:
    settings = dict(dsn=dsn, dbname=dbname, dbhost=dbhost, dbuser=dbuser,
                    isolation=isolation, implicitBegin=implicitBegin,
                    reconnect_timeout=reconnectTimeout,
                    resolve_commit_outcome=resolveCommitOutcome)
    # Unset, they keep DatabaseConfig's defaults.
    for name, value in (('max_usable_lag', maxUsableLag),
                        ('standby_catch_up_timeout', standbyCatchUpTimeout)):
        if value is not None:
            settings[name] = value
    _context.action(discriminator=('zopeless:database',),
                    callable=register_database, args=(settings,))
