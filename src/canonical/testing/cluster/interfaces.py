"""The contracts and exceptions of canonical.testing.cluster.

The exceptions derive from Exception only, not from ZopelessError, so that
the cluster code keeps to the standard library and runs before the
project's dependencies are installed.  For the same reason the interfaces
fall back to inert stand-ins when zope.interface is not importable: the
command line then still works, and nothing but verifyObject() needs them.
"""

try:
    from zope.interface import Attribute, Interface, implementer
except ImportError:  # a plain interpreter, before buildout
    class Interface:  # type: ignore[no-redef]
        """Stand-in: declares, checks nothing."""

    def Attribute(doc):  # type: ignore[no-redef]  # noqa: N802
        return doc

    def implementer(*interfaces):  # type: ignore[no-redef]
        return lambda cls: cls

__all__ = [
    'ClusterError', 'BinariesNotFound', 'ExternalServerError',
    'ReplicationError', 'NetworkHostError', 'PgBouncerError',
    'IServer', 'IClusterServer', 'IReplicationNode', 'INetworkHost',
    'IPgBouncer', 'IEtcd', 'IHAProxy', 'IPatroniMember', 'IPatroniCluster',
    'implementer',
]


# -- exceptions --------------------------------------------------------------

class ClusterError(Exception):
    """The private PostgreSQL cluster could not be found, built or run."""


class SyncStandbyMissing(ClusterError):
    """Every member of a synchronous Patroni cluster runs and a replica
    streams, caught up, yet Patroni names none its synchronous standby, for
    longer than its own loop needs to: the cluster cannot fail over and
    will not mend by waiting (Patroni 3.0 can loop on "Synchronous replication key updated
    by someone else" after a leader hung)."""


class BinariesNotFound(ClusterError):
    """No PostgreSQL server binaries were found on this machine."""


class ExternalServerError(ClusterError):
    """The operation needs the private cluster, but PG* names another server."""


class ReplicationError(ClusterError):
    """A standby could not be made, promoted, or made to follow a primary."""


class NetworkHostError(ClusterError):
    """A test network namespace could not be made, cut, restored or
    removed (the caller must be root, with ``ip`` installed)."""


class PgBouncerError(ClusterError):
    """PgBouncer is not installed, would not start, or refused a command."""


# -- interfaces --------------------------------------------------------------

class IServer(Interface):
    """A PostgreSQL server clients can reach."""

    external = Attribute("True for a server this package does not control.")
    host = Attribute("The address clients connect to.")
    port = Attribute("The TCP port, or None before the first start.")
    superuser = Attribute("A role that may create roles and databases.")

    def dsn(dbname='postgres', user=None):
        """A libpq connection string for ``dbname`` as ``user``."""

    def is_running():
        """True when the server answers (or its postmaster lives)."""

    def status():
        """A dict describing the server, for the command line."""


class IClusterServer(IServer):
    """A server of a private cluster: its files and its processes."""

    base = Attribute("The directory holding the state file.")
    datadir = Attribute("The PostgreSQL data directory.")
    rundir = Attribute("The directory of the unix socket.")
    logfile = Attribute("The server's log file.")
    runas = Attribute("The OS user running the server, or None (ourselves).")
    netns = Attribute(
        "The name of the network namespace the server runs in, or None.")

    def start():
        """Start the server (initialising it first); reuse a running one."""

    def stop(mode='fast'):
        """Stop the server; True when one was running."""

    def restart(mode='fast'):
        """Stop, then start again on the same port."""

    def kill(sig):
        """Signal the postmaster (a crash, for fault tests)."""

    def destroy():
        """Stop at once and delete every file of the cluster."""

    def pg_ctl(*args, **kw):
        """Run pg_ctl on the data directory; the CompletedProcess."""

    def psql(sql, dbname='postgres', user=None, check=True):
        """Run SQL through psql over the unix socket; its output."""

    def settings():
        """The node's own server settings (a dict), beyond the defaults."""

    def configure(**settings):
        """Change the node's own settings (None removes one); a running
        server reloads them.  Settings that need a restart take effect at
        the next start."""

    def allow(network, replication=False):
        """Let clients of ``network`` (CIDR) in, standbys too with
        ``replication``; a running server reloads pg_hba.conf."""


class IReplicationNode(IClusterServer):
    """A cluster that can be a primary or a streaming standby."""

    name = Attribute(
        "The node's name: a standby's application_name on its primary.")

    def is_standby():
        """True while the server is in recovery (a standby)."""

    def timeline():
        """The server's current timeline id (an int)."""

    def system_identifier():
        """The database system identifier shared by a primary and its
        standbys (a str of digits)."""

    def wal_lsn():
        """The WAL position: written on a primary, replayed on a standby."""

    def wait_replayed(lsn, timeout=30):
        """Wait until this standby has replayed ``lsn``."""

    def wait_streaming(timeout=30):
        """Wait until this standby streams from its primary."""

    def pause_streaming():
        """Stop receiving WAL, so that this standby lags behind."""

    def resume_streaming():
        """Stream again after pause_streaming()."""

    def synchronous_names():
        """The names of this primary's synchronous standbys."""

    def initialise_from(seed):
        """Initialise this node as a copy of the stopped node ``seed``."""

    def make_standby(base, name=None, synchronous=False, netns=None):
        """A new streaming standby of this primary, files under ``base``,
        made by pg_basebackup -R -X stream and started.  With
        ``synchronous`` the primary waits for it at every commit.  The
        standby never inherits this primary's synchronous_standby_names:
        once promoted it would wait for itself and hang every commit."""

    def set_synchronous(names):
        """Make the standbys named ``names`` synchronous (an empty list:
        asynchronous replication); reloads the primary."""

    def promote(timeout=30):
        """Turn this standby into a primary (pg_ctl promote) and wait
        until it accepts writes."""

    def fence():
        """Make a running primary refuse writes in place:
        default_transaction_read_only=on and a reload."""

    def unfence():
        """Undo fence()."""

    def follow(primary, rewind=True):
        """Make this (stopped or running, old) primary a standby of
        ``primary``: pg_rewind (or, with ``rewind`` false or when rewinding
        fails, a fresh base backup), then start it."""


class INetworkHost(Interface):
    """A network namespace reached over a veth pair: a separate host."""

    name = Attribute("The namespace's name (ip netns).")
    address = Attribute("The namespace's own address.")
    gateway = Attribute("This side's address of the veth pair.")
    network = Attribute("The /30 network of the pair (CIDR).")
    is_cut = Attribute("None, 'silent' or 'loud'.")

    def create():
        """Make the namespace and its link; returns self."""

    def command(argv, uid=None, gid=None):
        """argv run inside the namespace (as uid/gid when given)."""

    def join_peers():
        """Let this host reach the other hosts' addresses (and they it)
        through the machine, as machines of one network do."""

    def cut(silent=True):
        """Cut the host off.  Silent: its address vanishes, packets are
        dropped without a reset or an ICMP error, as when a machine dies
        or a network partitions.  Loud: every connection is reset and new
        ones are refused at once."""

    def restore():
        """Undo cut(): the host is reachable again, its servers as they
        were."""

    def remove():
        """Kill what still runs inside, delete the namespace and its link."""


class IPgBouncer(Interface):
    """PgBouncer in transaction pooling mode in front of one server."""

    host = Attribute("The address clients connect to (loopback).")
    port = Attribute("The TCP port clients connect to.")
    target = Attribute("(host, port) of the server behind it.")
    logfile = Attribute("PgBouncer's log file.")

    def start():
        """Start PgBouncer; returns self."""

    def stop():
        """Shut PgBouncer down at once (clients lose their connections)."""

    def restart():
        """stop() then start() on the same port."""

    def is_running():
        """True when PgBouncer's process lives."""

    def admin(command):
        """Run one admin console command (PAUSE, SHOW POOLS ...); its
        output as rows of strings."""

    def pause():
        """PAUSE: wait for server connections to be released, then hold
        new queries."""

    def resume():
        """RESUME after pause()."""

    def reconnect():
        """RECONNECT: close each server connection once it is released."""

    def server_pids():
        """The backend pids of PgBouncer's server connections."""

    def kill_server_connections(timeout=10):
        """Terminate PgBouncer's server connections on the server (as an
        administrator or a crash would) and wait until PgBouncer has
        dropped them; returns how many there were."""

    def retarget(host, port):
        """Point PgBouncer at another server (RELOAD), e.g. a promoted
        standby."""

    def destroy():
        """Stop and delete PgBouncer's files."""


# -- the Patroni kit ---------------------------------------------------------

class IEtcd(Interface):
    """One etcd member of a Patroni cluster (see cluster.etcd)."""

    url = Attribute('Its client URL on loopback.')
    port = Attribute('Its client port, on every address it listens on.')

    def endpoint(address='127.0.0.1'):
        """host:port of its client URL on ``address``."""

    def healthy():
        """True when it answers /health with a healthy member."""

    def start():
        """Start it (keeping its data) and wait until it is healthy."""

    def stop():
        """Stop it: Patroni loses its DCS."""

    def is_running():
        """True while its process runs."""


class IHAProxy(Interface):
    """HAProxy in front of Patroni members (see cluster.haproxy)."""

    host = Attribute('The address it listens on (127.0.0.1).')
    port = Attribute('The port it listens on.')
    check = Attribute("How it checks a member: 'patroni' (the REST API's "
                      "/primary, as Patroni's example) or 'tcp' (a plain "
                      "TCP connect, which any running PostgreSQL passes).")

    def start():
        """Start it and wait until it listens."""

    def stop():
        """Stop it."""

    def is_running():
        """True while its process runs."""


class IPatroniMember(Interface):
    """A Patroni process and its PostgreSQL in a namespace of their own."""

    name = Attribute("Patroni's name for it (m1, m2 ...).")
    host = Attribute('The address PostgreSQL and the REST API listen on.')
    port = Attribute("PostgreSQL's port.")
    netns = Attribute('Its INetworkHost (cut() it to make it vanish).')
    api = Attribute('The URL of its REST API.')

    def start():
        """Start its Patroni; wait until the REST API answers."""

    def stop():
        """Stop its Patroni (and so its PostgreSQL)."""

    def is_running():
        """True while its Patroni process runs."""

    def log_tail():
        """The end of its Patroni log (PostgreSQL's is in it too)."""

    def status():
        """Its REST API's /patroni answer; {} when unreachable."""

    def is_leader():
        """True when its REST API answers OPTIONS-like GET /primary 200."""

    def postmaster_pid():
        """The pid of its running postmaster, or None."""

    def kill_patroni():
        """SIGKILL its Patroni only, leaving its PostgreSQL running as it
        was (a leader's stays a writable primary: nobody demotes it); the
        postmaster's pid, or None.  start() runs Patroni again."""

    def kill_postgres(timeout=30):
        """SIGKILL the PostgreSQL a killed Patroni left running; wait
        until none of its processes remain.  ClusterError if its Patroni
        runs."""

    def pids():
        """Every process of the member: Patroni and its PostgreSQL."""

    def psql(sql, dbname='postgres'):
        """Run sql as superuser over its unix socket; the output."""


class IPatroniCluster(Interface):
    """etcd, Patroni members and HAProxy (see cluster.patroni)."""

    members = Attribute('The IPatroniMember list.')
    etcd = Attribute('The IEtcd.')
    haproxy = Attribute('The IHAProxy.')
    proxies = Attribute('The IHAProxy list add_haproxy() started.')
    timings = Attribute('ttl, loop_wait, retry_timeout in seconds.')
    synchronous = Attribute('Whether synchronous_mode is on.')
    started_in = Attribute('Seconds start() took.')

    def start():
        """Start it all; wait until every replica streams."""

    def destroy():
        """Stop everything it started and remove its files."""

    def leader():
        """The member answering /primary with 200, or None."""

    def wait_leader(other_than=None, timeout=60):
        """Wait until a member (not ``other_than``) leads; it."""

    def wait_replicas(timeout=60, sync_grace=None):
        """Wait until every member runs and every replica streams; under
        synchronous mode, one replica is the synchronous standby.  With
        ``sync_grace`` (seconds), raise SyncStandbyMissing as soon as a
        replica has streamed caught up that long with none named so."""

    def topology():
        """Patroni's /cluster answer by member name."""

    def patronictl(*args):
        """Run patronictl on this cluster; its output."""

    def add_haproxy(members, check='tcp', balance='first',
                    checks='inter 1s fall 2 rise 1 on-marked-down '
                    'shutdown-sessions'):
        """Start another IHAProxy in front of ``members`` in that order,
        as some users configure one (a plain TCP check, ``balance
        first``); destroy() stops it if nothing did before."""

    def switchover(candidate=None):
        """patronictl switchover from the leader (to ``candidate``)."""

    def restart(member):
        """patronictl restart of ``member``."""

    def reinit(member):
        """patronictl reinit of ``member`` (a new base backup); waits."""

    def hang(member):
        """SIGSTOP every process of ``member``; the pids stopped."""

    def resume(pids):
        """SIGCONT what hang() stopped."""

    def usage():
        """(CPU seconds used, resident kB) of all its processes."""
