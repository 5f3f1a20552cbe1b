"""Which server a connection reached: its identity, asked once at connect.

A promoted standby starts a new timeline; the primary it replaced stays on
the old one.  Asking a new connection for its server's system identifier
and timeline (and the postmaster's start time, and its real backend pid)
costs one round trip per connection, never one per transaction, and lets
the library:

* refuse a demoted primary that still accepts writes (a healed partition,
  a primary that was never fenced) once this process has written to a
  later timeline of the same system: split brain, prevented where the
  server can tell the two apart;
* know whether a backend pid it remembers belongs to the server it now
  talks to (same system, timeline and start time, and no pooler in
  between) before ever looking it up;
* refuse a server that would open read-only transactions, which a pooler
  passing on a stale report hides from libpq's target_session_attrs;
* find the prepared transactions of this very process that a server holds
  (a standby promoted after a PREPARE reached it), to finish them.

The timeline comes from the name of the current WAL file, which a
promotion changes at once; ``pg_control_checkpoint()`` only changes at the
next checkpoint, minutes later.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional, Tuple

import psycopg2.extensions
from zope.interface import implementer

from canonical.database.interfaces import IServerIdentity
from canonical.database.twophase import this_process_prefix

__all__ = ['ServerIdentity', 'ServerConnection', 'identify',
           'IDENTITY_SQL']

IDENTITY_SQL = (
    'SELECT s.system_identifier::text, '
    'CASE WHEN pg_is_in_recovery() THEN NULL ELSE '
    "('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))"
    '::bit(32)::int END, '
    'pg_postmaster_start_time()::text, pg_backend_pid(), '
    "current_setting('transaction_read_only') = 'on', "
    'ARRAY(SELECT gid FROM pg_prepared_xacts WHERE gid LIKE %s '
    'AND database = current_database()) '
    'FROM pg_control_system() s')


@implementer(IServerIdentity)
class ServerIdentity(NamedTuple):
    """See IServerIdentity."""

    system: str
    timeline: Optional[int]
    started: str
    backend_pid: int
    pooled: bool
    address: str
    read_only: bool = False
    prepared: Tuple[str, ...] = ()

    def same_server(self, other: Optional['ServerIdentity']) -> bool:
        return other is not None and (self.system, self.timeline,
                                      self.started) == (
            other.system, other.timeline, other.started)

    def backend_of(self, other: Optional['ServerIdentity']
                   ) -> Optional[int]:
        if self.pooled or not self.same_server(other):
            return None
        return self.backend_pid


class ServerConnection(psycopg2.extensions.connection):
    """A psycopg2 connection that knows its server's identity (``server``,
    set by identify(); None when it was not asked) and the entry of the
    host list it was made to (``host_label``), which stays known after
    the connection died."""

    server: Optional[ServerIdentity] = None
    host_label: Optional[str] = None


def identify(raw: Any) -> ServerIdentity:
    """Ask the server of the idle connection ``raw`` who it is; sets and
    returns ``raw.server``.  One round trip; ``raw`` is left idle."""
    autocommit = raw.autocommit
    raw.autocommit = True
    try:
        cursor = raw.cursor()
        cursor.execute(IDENTITY_SQL, (this_process_prefix() + '%',))
        (system, timeline, started, pid, read_only,
         prepared) = cursor.fetchone()
        cursor.close()
    finally:
        raw.autocommit = autocommit
    # A pooler answers the startup with a pid of its own invention.
    identity = ServerIdentity(
        system, timeline, started, pid, pid != raw.info.backend_pid,
        '%s:%s' % (raw.info.host, raw.info.port), read_only,
        tuple(prepared))
    try:
        raw.server = identity
    except AttributeError:
        pass  # a plain psycopg2 connection, made by a connector of a site
    return identity
