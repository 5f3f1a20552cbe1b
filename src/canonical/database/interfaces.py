"""The contracts of canonical.database: interfaces and exceptions.

Everything a user of the package can catch or rely on is declared here;
the implementations point back with ``@implementer``.  The test kit's
contracts are the kit's (canonical.testing.interfaces,
canonical.testing.cluster.interfaces).

Read from the top: each group, under a heading comment, has the
interfaces of one role and the errors they raise.

* the base error (ZopelessError);
* configuration (IDatabaseConfig);
* the transaction manager and its data manager: what scripts use;
* the connection: one thread's statements and transaction control;
* reconnecting and the host list: outages, failovers, refused servers;
* outcomes and two-phase commit: a lost COMMIT answer settled, prepared
  transactions;
* additions: new groups, at the end.

Which exceptions to catch
-------------------------
Statements run through SQLObject raise ``sqlobject.dberrors`` exceptions
(the DB-API 2 hierarchy: ``ProgrammingError``, ``OperationalError``,
``IntegrityError`` ...), with the psycopg2 exception chained as
``__context__``.  The library's own errors fit into that hierarchy, so one
``except sqlobject.dberrors.Error`` catches everything a database can do to
a script, and ``except ZopelessError`` catches what this library adds.
"""

from sqlobject import dberrors
from transaction.interfaces import AlreadyInTransaction
from transaction.interfaces import IRetryDataManager
from transaction.interfaces import ISavepointDataManager
from transaction.interfaces import TransientError
from zope.interface import Attribute
from zope.interface import Interface

__all__ = [
    # the base error
    'ZopelessError',
    # configuration
    'IDatabaseConfig',
    'ConfigurationError',
    'ConflictingTransactionManagerError',
    # the transaction manager and its data manager
    'IZopelessTransactionManager',
    'IZopelessDataManager',
    'NotInstalledError',
    'NoTransactionError',
    'TransactionInProgressError',
    # the connection
    'IDatabaseConnection',
    'InvalidValueError',
    'TransactionAbortedError',
    # reconnecting and the host list
    'IReconnectCoordinator',
    'IDatabaseServers',
    'IServerIdentity',
    'ConnectionFailedError',
    'DatabaseUnavailableError',
    'DisconnectionError',
    'ReadOnlyServerError',
    # outcomes and two-phase commit
    'ICommitOutcomes',
    'IPreparedTransactions',
    'CommitOutcomeUnknownError',
    'TransactionLostError',
    # statistics
    'IDatabaseStats',
    'IMeasuredConnection',
    'IDatabaseStatsProvider',
]


# -- The base error ----------------------------------------------------------
# Every error the library raises itself derives from it.

class ZopelessError(Exception):
    """Base of every error this library raises itself.

    ``pgcode`` is the SQLSTATE of the server error behind it (as on
    psycopg2's errors and on the sqlobject.dberrors errors this library
    translates), or None when no server error is.
    """

    pgcode = None


# -- Configuration -----------------------------------------------------------
# Where the database is and how to talk to it; initZopeless() takes one.

class IDatabaseConfig(Interface):
    """Where the database is and how to talk to it.

    A configuration never changes once made: derive another one with
    replace().  Adapting a configuration to IDatabaseConnection gives a new,
    not yet connected, reconnecting connection.
    """

    isolation = Attribute(
        "The isolation level name, one of canonical.database.isolation.")
    implicitBegin = Attribute(
        "True: a transaction is always open; False: begin() opens one.")
    debug = Attribute(
        "True: every statement is logged (canonical.database.sql, DEBUG).")
    writes = Attribute(
        "True when sessions must be able to write (target_session_attrs "
        "read-write, the default, or primary): a server found read-only is "
        "left for a writable one.")
    reconnect_timeout = Attribute(
        "Seconds begin() waits for the database before raising "
        "DatabaseUnavailableError; None waits for ever.")
    reconnect_initial_delay = Attribute(
        "Seconds before the second connection attempt of an outage.")
    reconnect_max_delay = Attribute(
        "Cap of the exponential backoff between attempts, in seconds.")
    resolve_commit_outcome = Attribute(
        "When true, every transaction commits in two phases (PREPARE, then "
        "COMMIT PREPARED), so a COMMIT cut off by a disconnection is settled "
        "exactly after reconnecting instead of raising "
        "CommitOutcomeUnknownError; it costs one round trip per "
        "transaction.")

    def connect_kwargs():
        """The keyword arguments for psycopg2.connect(), password included.

        Never log or show the result.
        """

    def get(key, default=None):
        """One libpq connection parameter; asking for the password raises
        KeyError."""

    def describe():
        """A description of the target for messages: host, port, database
        and user, never the password."""

    def replace(**changes):
        """A copy of this configuration with the named settings changed
        (any keyword of the constructor except the libpq ones: isolation,
        implicitBegin, debug, reconnect_timeout, resolve_commit_outcome,
        ...).  Raises ConfigurationError for an unknown or invalid one."""

    def database_key():
        """A hashable value equal for two configurations with the same
        connection parameters, whatever their behaviour settings: the key
        of the per-process objects every configuration of a database
        shares (the reconnect coordinator, the ledger of prepared
        transactions)."""

    def settings_key():
        """A hashable value equal for two configurations of the same
        database with the same behaviour."""


class ConfigurationError(ZopelessError, ValueError):
    """The database settings are malformed; fix them and call again."""


class ConflictingTransactionManagerError(ZopelessError):
    """initZopeless() was called again with different settings."""


# -- The transaction manager and its data manager ----------------------------
# What scripts use, and what joins the ``transaction`` package for them.

class IZopelessTransactionManager(Interface):
    """What scripts use: the per-thread database transactions of a process.

    It is registered as a utility by initZopeless().  Each thread has its own
    connection and its own transaction; commit() and abort() end this
    thread's transaction through the ``transaction`` package, so other data
    managers joined to it commit or abort together with the database.
    """

    config = Attribute("The IDatabaseConfig in use.")
    implicitBegin = Attribute("See IDatabaseConfig.implicitBegin.")
    installed = Attribute("False once uninstall() has run.")

    def begin():
        """Begin a transaction in this thread.

        With implicitBegin=False nothing touches the database before this.
        A lost connection is re-established first, blocking until the
        database is back (see IDatabaseConnection.ensure_connected).
        Raises TransactionInProgressError when this thread already began,
        ConnectionFailedError for permanent refusals and
        DatabaseUnavailableError after reconnect_timeout.
        """

    def commit():
        """Commit this thread's transaction (transaction.commit()).

        A disconnection before COMMIT raises DisconnectionError (nothing
        committed, safe to retry); one during COMMIT raises
        CommitOutcomeUnknownError unless resolve_commit_outcome is set.
        With implicitBegin a new transaction is begun afterwards.
        Raises NoTransactionError when no transaction was begun.
        """

    def abort():
        """Roll back this thread's transaction (transaction.abort()).

        Never fails because the connection is dead.
        """

    def set_isolation_level(level):
        """Use ``level`` for the transactions begun from now on in every
        thread.  Raises ConfigurationError for an unknown level."""

    def connection():
        """This thread's IDatabaseConnection, for raw SQL in the current
        transaction.  Work done there commits like ORM work."""

    def registerSynch(synch):
        """Register the ISynchronizer ``synch`` with the ``transaction``
        manager of every thread this manager serves: the threads that used
        it already, and each other thread at its first use.  (For what
        must see every unit of the process, such as --dry-run's guard.)"""

    def unregisterSynch(synch):
        """Undo registerSynch() in every thread."""

    def uninstall():
        """Roll back and close every thread's connection, unregister the
        utility and let initZopeless() be called again."""


class IZopelessDataManager(ISavepointDataManager, IRetryDataManager):
    """The data manager a thread's database transaction joins with.

    Alone in a transaction it commits in tpc_vote (one phase, no extra
    round trip); with other data managers it votes with PREPARE TRANSACTION
    and finishes with COMMIT PREPARED.  should_retry() is true for
    serialization failures, deadlocks and disconnections.
    """

    db = Attribute("The thread's IDatabaseConnection.")
    txn = Attribute("The transaction joined, or None.")
    gid = Attribute(
        "The two-phase transaction id, made when the database transaction "
        "is prepared; None before, and in autocommit mode.")

    def start(txn):
        """Begin the database transaction and join ``txn``."""

    def join(txn):
        """Join ``txn`` with the database transaction already begun."""


class NotInstalledError(ZopelessError):
    """The transaction manager was uninstalled and can no longer be used."""


class NoTransactionError(ZopelessError, AttributeError):
    """A model was used in a thread that has no transaction in progress."""


class TransactionInProgressError(ZopelessError, AlreadyInTransaction):
    """begin() was called while this thread already has a transaction."""


# -- The connection ----------------------------------------------------------
# One thread's connection: statements, transaction control, errors of a
# statement.

class IDatabaseConnection(Interface):
    """One thread's connection to the database, which comes back by itself.

    A connection is used by one thread at a time.  It connects lazily: no
    network traffic happens before begin() or ensure_connected().  A site
    may register its own implementation as the adapter from
    IDatabaseConfig; the data manager, the transaction manager, the
    SQLObject connection and the two-phase helpers use nothing but what is
    declared here.

    It sends the transaction control itself (the psycopg2 connection runs
    in autocommit mode): BEGIN travels with the first statement, so a
    healthy transaction costs two round trips, three in two phases, none
    without statements.
    """

    config = Attribute("The IDatabaseConfig this connection was made from.")
    raw = Attribute(
        "The psycopg2 connection, or None while not connected.  Reading it "
        "in a transaction whose BEGIN has not gone out yet sends that BEGIN "
        "(one round trip of its own), so work done on it directly (COPY, "
        "LISTEN, ...) belongs to the transaction: read it again in each "
        "transaction.  It runs in autocommit mode and the library sends "
        "the transaction control: do not call its commit(), rollback() or "
        "tpc_*() methods, and get server-side cursors from cursor(name).")
    autocommit = Attribute(
        "True when the configuration asks for autocommit: every statement "
        "commits by itself and there is no transaction to join.")
    backend_pid = Attribute(
        "The server process id of the live connection, known without a "
        "round trip, or None.")
    prepared = Attribute(
        "The IPreparedTransactions of this connection's database.")
    outcomes = Attribute("The ICommitOutcomes of this connection's database.")
    outcome_slot = Attribute(
        "The commit outcome slot of the current connection, or None when "
        "no marker is written (resolve_commit_outcome off, a reader, "
        "autocommit, or no table).")
    outcome_token = Attribute(
        "The token the current transaction writes into the slot (and its "
        "gid, should it prepare), or None.")
    server = Attribute(
        "The IServerIdentity of the current connection's server, or None "
        "(not connected, or not asked: a reader).")
    reconnects = Attribute("Connections found lost and made again.")
    replays = Attribute(
        "First statements of a transaction sent again on a new connection "
        "after they found the link dead.")

    def set_config(config):
        """Use ``config`` (another isolation level, say) from the next
        begin() on; the connection itself is kept."""

    def death_reason():
        """Why the connection is known to be dead without a round trip (the
        peer closed the socket, or ended the session), or None."""

    def ensure_connected():
        """Return a live psycopg2 connection.

        A connection the operating system already knows to be closed is
        replaced.  While the database is unreachable this blocks (see
        IReconnectCoordinator) until it is back or reconnect_timeout has
        passed (DatabaseUnavailableError).  Permanent refusals (bad user,
        password, database) raise ConnectionFailedError at once.
        """

    def begin():
        """Start a database transaction; return the psycopg2 connection.

        A dead connection is replaced first, as in ensure_connected(), and
        deferred prepared transactions are finished.  For writers
        (IDatabaseConfig.writes), a server that reported itself read-only
        (fenced or demoted since the connection was made; PostgreSQL 14
        and later report it with any answer, no round trip) is left the
        same way.  Nothing else is sent: the BEGIN travels with the first
        statement (see send()).
        """

    def run(operation, *args):
        """Return ``operation(raw, *args)``, another library's operation (a
        SQLObject query) that sends its statements through send().

        When the transaction's first statement finds the link dead (nothing
        of it has run), the connection is made again, waiting through an
        outage as begin() does, and ``operation`` called once more on it.
        Any other disconnection raises DisconnectionError: a second one, one
        from the second statement on, any in autocommit mode.
        """

    def send(execute, query, *args):
        """Return ``execute(query, *args)`` as a statement of the current
        transaction (call it within run()).

        When the transaction's BEGIN has not gone out yet, it is put in
        front of ``query`` (a str, bytes or psycopg2.sql.Composable), so
        both travel in one message.  Statements must not end the
        transaction themselves (COMMIT, ROLLBACK): the data manager does.
        """

    def execute(query, params=None):
        """Run one statement in the current transaction, as run() and send()
        do; return the cursor.  Statement errors raise sqlobject.dberrors
        exceptions."""

    def cursor(name=None, scrollable=None):
        """A psycopg2 cursor inside the current transaction (whose BEGIN is
        sent first, if it has not gone out yet).

        With a ``name``, a server-side cursor: its execute() declares it
        WITHOUT HOLD in the transaction, so it ends with the transaction as
        psycopg2's own named cursors do; fetching and iterating are
        psycopg2's.
        """

    def commit():
        """Commit the transaction in one phase.

        Sends COMMIT, or nothing when the transaction sent no statement.  A
        connection already known to be dead raises DisconnectionError
        before anything is sent (nothing was committed); errors of the
        COMMIT itself are the driver's (psycopg2.Error).
        """

    def prepare(gid):
        """PREPARE TRANSACTION ``gid``; return False, having sent nothing,
        when the transaction sent no statement (nothing to finish either).

        Raises like commit().
        """

    def finish_prepared(gid, commit):
        """COMMIT PREPARED (``commit`` true) or ROLLBACK PREPARED ``gid`` on
        the live connection; errors are the driver's."""

    def rollback():
        """Roll back the transaction in progress (nothing is sent when it
        sent no statement); a connection that cannot is discarded."""

    def lost_in_transaction(error):
        """The DisconnectionError to raise when ``error`` killed the link
        in the middle of a transaction."""

    def finish_deferred_now():
        """Finish deferred prepared transactions on the live connection
        without waiting; return the gids still unfinished (gid -> commit).
        """

    def is_disconnect(error):
        """True when ``error`` means the connection is gone."""

    def statement_error(error):
        """The error to raise for ``error``, which a statement of the
        current transaction raised: DisconnectionError when the link died,
        ReadOnlyServerError (the connection dropped) when the server no
        longer takes writes, otherwise ``error`` itself, with its SQLSTATE
        as ``pgcode``."""

    def discard(reason):
        """Forget a connection that is dead or in an unknown state; the
        next ensure_connected() makes a new one."""

    def close():
        """Roll back what is in progress and close the connection."""


class InvalidValueError(ZopelessError, ValueError):
    """A value cannot be stored as given (NUL byte, invalid Unicode)."""


class TransactionAbortedError(ZopelessError, dberrors.InternalError):
    """commit() was called after a statement of the transaction failed:
    PostgreSQL has aborted the transaction and would answer COMMIT with a
    rollback, so nothing of it was committed.  Call abort(); to go on
    after an expected error, run that statement inside a savepoint."""

    pgcode = '25P02'  # in_failed_sql_transaction


# -- Reconnecting and the host list ------------------------------------------
# Making connections through outages and failovers, and the errors a lost or
# refused connection gives.

class IReconnectCoordinator(Interface):
    """Connection making for one database, shared by a process's threads.

    While the database answers, threads connect side by side; during an
    outage one thread probes with capped exponential backoff and the others
    wait for its verdict.  The counters are figures for tools and tests.
    """

    in_outage = Attribute("True while the database is found unreachable.")
    attempts = Attribute("Connection attempts made, counting every one.")
    outage_attempts = Attribute("Attempts made by probers during outages.")
    outages = Attribute("Outages begun.")
    last_downtime = Attribute(
        "Seconds from the start of the last outage to its end.")
    refusals = Attribute(
        "Failed attempts by what they met (a dict: too_many_clients, "
        "starting_up, shutting_down, recovering, refused, timeout, "
        "read_only, stale, other; see "
        "canonical.database.classify.connect_failure_kind).")
    last_failure = Attribute(
        "What the last failed attempt met (a key of refusals), or None.")

    def connect(config, deadline=None, reason=None):
        """A new psycopg2 connection made from ``config``, waiting through
        an outage until the monotonic ``deadline`` (None: for ever).

        ``reason`` is set when a connection was lost (it has already been
        reported).  Raises ConnectionFailedError for permanent refusals
        and DatabaseUnavailableError at the deadline.
        """

    def note_loss():
        """A connection of this database was found dead: until the next
        success, threads connect one at a time."""


class IDatabaseServers(Interface):
    """The servers of one database's host list, as a process knows them.

    Connections are made host by host: the host that last answered is
    tried first, and a host that timed out is left to a background probe
    while another host can be tried, so a silent host does not cost its
    connect_timeout on every attempt.  Writers' connections are asked
    their server's identity, and a demoted primary (an older timeline of a
    system this process has written to on a later one) is refused.
    """

    hosts = Attribute("The host:port entries of the list, in list order.")
    timeouts = Attribute("Connection attempts that timed out, by host.")
    stale_refused = Attribute("Connections refused as a demoted primary.")
    timeline_changes = Attribute(
        "How many times this process has reached a later timeline of a "
        "system: a connection's server, found not stale, is looked at "
        "again only when this changed.")

    def connect(config):
        """A new psycopg2 connection to the first host that takes it;
        raises the psycopg2 error of every host when none does."""

    def is_stale(identity):
        """True when ``identity`` is an older timeline of a system a later
        timeline of which this process connected to."""

    def note_lost(raw, reason):
        """A connection was found dead for ``reason``: when it timed out,
        its host is suspect from now on."""

    def entries():
        """(label, per-host libpq parameters) of each host of the list."""

    def suspect(label, config):
        """Host ``label`` timed out: skip it and probe it in the
        background, whoever found out (a writer, a reader, a sampler)."""

    def suspects():
        """The hosts currently left to the background probe."""

    def stop_probing():
        """Stop the background probe (it starts again when a host times
        out again); returns once it has stopped."""


class IServerIdentity(Interface):
    """Who a connection's server is, asked once when it connected."""

    system = Attribute("The database system identifier (a string).")
    timeline = Attribute(
        "The server's timeline: a promotion starts a new one.  None on a "
        "standby.")
    started = Attribute("When the postmaster started (text).")
    backend_pid = Attribute(
        "The real backend pid, as the server gave it.  Through a pooler it "
        "is one of the pooler's server connections, of no use later.")
    pooled = Attribute(
        "True when a pooler stands between (the pid libpq was told is not "
        "the backend's).")
    address = Attribute("host:port the connection was made to.")
    read_only = Attribute(
        "True when a new transaction there would be read-only.")
    prepared = Attribute(
        "The gids of this process's prepared transactions the server held "
        "when the connection was made.")

    def same_server(other):
        """True when ``other`` names the same server run: system, timeline
        and start time."""

    def backend_of(other):
        """This identity's backend pid if it is a backend of the server
        ``other`` (the identity of a connection made later) names, else
        None: never look a pid up on another server."""


class ConnectionFailedError(ZopelessError, dberrors.OperationalError):
    """The server refused the connection for good (bad user, password,
    database or DSN); waiting would not help."""


class DatabaseUnavailableError(ZopelessError, dberrors.OperationalError,
                               TransientError):
    """The database stayed unreachable for longer than the reconnect
    timeout."""


class DisconnectionError(ZopelessError, dberrors.OperationalError,
                         TransientError):
    """The connection died while a transaction was in progress; nothing of
    it was committed.  Abort and run the transaction again."""


class ReadOnlyServerError(ZopelessError, dberrors.OperationalError,
                          TransientError):
    """The server refused a write because it does not take writes (any
    more): a standby, a primary fenced with default_transaction_read_only,
    or one demoted after a switchover.  The connection was dropped; nothing
    of the transaction was committed.  Abort and run it again: the next
    begin() waits for a writable server.  ``pgcode`` is '25006'."""

    pgcode = '25006'


# -- Outcomes and two-phase commit -------------------------------------------
# Knowing whether a commit whose answer was lost happened, and the prepared
# transactions of a process.

class ICommitOutcomes(Interface):
    """Exact commit outcomes for resolve_commit_outcome: per connection a
    slot row of the table zopeless_commit_outcome, into which every
    transaction writes its token with its BEGIN (see
    canonical.database.outcomes)."""

    available = Attribute(
        "True once the table was found or made, False when the role may "
        "not create it (then transactions PREPARE instead), None before "
        "the first connection.")
    lookups = Attribute("Outcomes looked up after a lost answer.")
    terminated = Attribute(
        "Old sessions terminated because they held a slot too long.")

    def open_slot(raw):
        """Make the slot of the new connection ``raw`` (idle; left idle)
        and return its name, or None when the table is not available.  The
        first time, the table is created if needed (a WARNING says how to
        create it when the role may not) and the slots of dead processes
        of this host are removed; slots retired since are removed too."""

    def retire(slot):
        """The connection of ``slot`` is gone: remove the slot later."""

    def hold(slot):
        """Keep ``slot``, even if retired, until release(): its transaction
        is committing, and may have to be looked up."""

    def release(slot):
        """Undo one hold()."""

    def marker(slot, token):
        """The SQL that writes ``token`` into ``slot``, sent in the same
        message as the transaction's BEGIN."""

    def lookup(raw, slot, token, deadline):
        """Whether the transaction of ``token`` committed, on the server of
        ``raw``: a pair (prepared, committed).  prepared is True when it
        is still a prepared transaction (committed is then None).
        Otherwise committed is True or False, or None when the session
        that had it open still held it at the monotonic ``deadline``; such
        a session is terminated after a grace period, found through the
        server's own view of its backends."""


class IPreparedTransactions(Interface):
    """The two-phase bookkeeping of one database in this process.

    Prepared transactions that could not be finished when decided (the
    database was away, say) are remembered here and finished on the next
    live connection; those left by dead processes of this host are
    committed once, on the first connection.
    """

    recovered = Attribute(
        "True once prepared transactions of dead processes were looked "
        "for on this database.")
    settled = Attribute(
        "Transactions whose COMMIT or PREPARE answer was lost, settled "
        "after reconnecting.")
    orphans_recovered = Attribute(
        "Prepared transactions of dead processes committed.")
    deferred = Attribute("Prepared transactions deferred to a later begin().")
    has_pending = Attribute(
        "True while a deferred transaction is unfinished: what every "
        "begin() reads first, without a call.")
    deferred_finished = Attribute(
        "Deferred prepared transactions finished since.")

    def defer(gid, commit):
        """Have the next live connection commit (or, with commit false,
        roll back) prepared transaction ``gid``."""

    def pending():
        """The deferred transactions still unfinished: a dict gid ->
        commit."""

    def finish_pending(raw):
        """COMMIT or ROLLBACK PREPARED every deferred transaction on the
        idle psycopg2 connection ``raw``; those that fail stay pending."""

    def recover_orphans(raw):
        """Once per process: commit the prepared transactions left by dead
        processes of this host, on the idle psycopg2 connection ``raw``."""

    def note_settled():
        """Count a transaction settled after its answer was lost."""

    def decide(gid, commit):
        """Remember what was decided for prepared transaction ``gid``
        (commit, or with commit false roll back), also after it was
        finished: a standby promoted later may hold it still prepared."""

    def adopt(gids):
        """``gids`` of this process were found prepared on a server (on a
        new connection): those decided are deferred, to be finished at the
        next begin(); the others are still being prepared by a thread."""


class CommitOutcomeUnknownError(ZopelessError, dberrors.OperationalError):
    """The connection died while COMMIT was in flight: the transaction may
    or may not have committed."""


class TransactionLostError(ZopelessError, dberrors.OperationalError):
    """A failover lost the database's part of a two-phase transaction that
    the other data managers had already committed: the server the library
    now talks to never received it.  The transaction is partly done and
    needs a person."""


# -- Additions ---------------------------------------------------------------
# New groups go below, each under a heading comment like the ones above.


# -- read replicas: database policies and standbys ----------------------------
# Launchpad's names (lp.services.database.policy and .interfaces), so code
# written against them runs unchanged.

PRIMARY_FLAVOR = 'primary'
STANDBY_FLAVOR = 'standby'
DEFAULT_FLAVOR = 'default'


class DisallowedStore(ZopelessError):
    """The database policy in force forbids this access: the primary under
    StandbyOnlyDatabasePolicy, any database under DatabaseBlockedPolicy.
    ``args`` name the flavor asked for."""


class ReadOnlyUnitError(ZopelessError, dberrors.ProgrammingError):
    """A unit running under a standby policy tried to write.  Such units
    are read-only wherever they run (a standby, or the primary they fell
    back to); nothing was written.  Do the write outside the policy's
    block, or under PrimaryDatabasePolicy.  ``pgcode`` is '25006'."""

    pgcode = '25006'


class NoUsableStandbyError(ZopelessError, dberrors.OperationalError):
    """StandbyOnlyDatabasePolicy found no standby it may use: none
    answers, every one lags more than max_usable_lag, or none has
    replayed this process's last commit within standby_catch_up_timeout.
    Nothing was run.  Retry later, or use StandbyDatabasePolicy, which
    falls back to the primary."""


class IDatabasePolicy(Interface):
    """Which server the units of work begun under it use (Launchpad's
    IDatabasePolicy).  A policy is in force in one thread, inside
    ``with policy:`` (or between install() and uninstall()); policies
    nest, the innermost wins; without one, PrimaryDatabasePolicy."""

    default_flavor = Attribute(
        "PRIMARY_FLAVOR or STANDBY_FLAVOR: where units go by default.")

    def flavor_for(flavor=DEFAULT_FLAVOR):
        """The flavor a unit asking for ``flavor`` gets; DisallowedStore
        when the policy forbids it."""

    def allows_primary_fallback():
        """Whether a standby unit may run on the primary (read-only) when
        no standby is usable."""

    def install():
        """Put the policy in force in this thread (as ``__enter__``)."""

    def uninstall():
        """Take it out of force (as ``__exit__``); AssertionError when it is
        not the innermost."""


class IStandbyMonitor(Interface):
    """What a process knows of a database's standbys, from one background
    sampler per database: which hosts of the dbhost list are standbys,
    whether they answer, how far behind they are, and this process's last
    commit position (read-your-writes)."""

    max_usable_lag = Attribute("Seconds of lag above which a standby is "
                               "left (the configuration's).")
    floor = Attribute("The WAL position (int) a standby must have replayed "
                      "to show every commit this process made.")
    samples = Attribute("How many sampling rounds have run.")

    def start():
        """Sample once now and keep sampling in the background."""

    def stop():
        """Stop sampling and close the sampler's connections."""

    def hosts():
        """{label: {'role', 'lag', 'replayed', 'readers'}} as last seen."""

    def lag(label):
        """The lag, in seconds, of the standby ``label``: how long ago the
        primary had first gone past what it has replayed; 0.0 when it is
        current, None when unknown.  It does not grow on an idle primary."""

    def candidates(floor=0, max_lag=None):
        """Labels of the standbys a read unit may use now, best first:
        answering, still standbys, lag within ``max_lag`` (default
        max_usable_lag); the least used first, then those known past WAL
        position ``floor``."""

    def floor_now():
        """``floor``, once commits whose position is unknown (made before
        tracking began, two-phase, or whose answer was lost) are covered
        by the primary's position, asked now; None when no primary
        answered (then only the primary may serve a read unit)."""

    def tracking():
        """True once a standby policy was used: commits then report their
        WAL position."""


__all__ += [
    'PRIMARY_FLAVOR', 'STANDBY_FLAVOR', 'DEFAULT_FLAVOR',
    'DisallowedStore', 'ReadOnlyUnitError', 'NoUsableStandbyError',
    'IDatabasePolicy', 'IStandbyMonitor',
]


# -- statistics --------------------------------------------------------------

class IDatabaseStats(Interface):
    """What happened to one database in this process, for monitoring: one
    object per database (IDatabaseConfig.database_key), shared by every
    thread and configuration of it.

    Counters only grow (a monitoring system computes rates from them); a
    forked child starts with its own, at zero.  They are plain integer
    increments, never locked on the path of a transaction: exact on
    CPython 3.10 and later, whose threads never switch between the read
    and the write of an increment; on 3.9 (and free-threaded builds)
    increments of threads counting at the same instant may be lost.  The
    "kind" dictionaries have a key only once something of that kind
    happened.
    """

    database = Attribute("The database name (dbname), for labels.")
    target = Attribute(
        "Host, port, database and user (IDatabaseConfig.describe()); never "
        "the password.")
    connections = Attribute("Connections made (successful attempts).")
    connect_failures = Attribute(
        "Failed connection attempts by what they met (a dict: "
        "too_many_clients, starting_up, shutting_down, recovering, refused, "
        "timeout, read_only, stale, other).")
    connections_dropped = Attribute(
        "Connections given up: found dead, or left because their server "
        "would not take writes (any more).")
    reconnects = Attribute("Connections found lost and made again.")
    outages = Attribute("Outages begun: times the database was found "
                        "unreachable and begin() started waiting.")
    outage_seconds = Attribute(
        "Seconds spent in outages, the one in progress included.")
    in_outage = Attribute("True while the database is found unreachable.")
    unavailable = Attribute(
        "Waits given up at reconnect_timeout (DatabaseUnavailableError).")
    units_committed = Attribute("Units of work (transactions) committed.")
    units_rolled_back = Attribute(
        "Units of work rolled back without an error of the database: by "
        "the application, or because another data manager failed.")
    units_failed = Attribute(
        "Units of work that ended without committing because of an error, "
        "by kind (a dict): disconnection (DisconnectionError), read_only "
        "(ReadOnlyServerError), outcome_unknown (CommitOutcomeUnknownError), "
        "lost (TransactionLostError), aborted (TransactionAbortedError), "
        "conflict (serialization failure, deadlock), error (any other).  "
        "The first error of a unit names its kind.")
    outcomes_resolved = Attribute(
        "Transactions whose COMMIT or PREPARE answer was lost, settled after "
        "reconnecting, by outcome (a dict: committed, rolled back, not "
        "committed, unknown).")
    replays = Attribute(
        "First statements of a transaction sent again on a new connection.")
    failovers = Attribute(
        "Times a new connection reached another server than the one "
        "before: another system identifier or timeline, or another entry of "
        "the host list.")
    hosts_skipped = Attribute(
        "Servers of the host list passed over when connecting, by reason (a "
        "dict): suspect (timed out lately, left to the background probe), "
        "read_only (refuses writes), stale (a demoted primary).")

    def get_stats():
        """A snapshot of every figure above: a dict of name -> value (the
        kind dictionaries copied)."""

    def pop_stats():
        """Like get_stats(), but the counters as their increase since the
        last pop_stats() (since the start, the first time); the counters
        themselves keep growing."""


class IMeasuredConnection(IDatabaseConnection):
    """A connection that counts into its database's IDatabaseStats.  The
    data manager counts units only for connections that provide it."""

    stats = Attribute("The IDatabaseStats of this connection's database.")
    unit_failure = Attribute(
        "The kind (a key of IDatabaseStats.units_failed) of the first error "
        "of the current unit of work, or None; reset by begin().")

    def note_failure(error):
        """Remember ``error`` as what made the current unit fail, unless an
        earlier one did; return ``error``."""


class IDatabaseStatsProvider(Interface):
    """Something that knows its database's statistics."""

    def stats():
        """The IDatabaseStats of the database in use."""
