"""A Patroni cluster as users run one: etcd, three members, HAProxy.

Each member is a Patroni process (Debian's ``patroni``, scripts/setup.sh
installs it) managing its own PostgreSQL, both inside a network namespace
of its own (``NetworkHost``), so that a member can vanish from the network
silently.  etcd runs in the root namespace on loopback and on the
namespaces' gateway addresses; HAProxy on loopback, checking each member's
REST API as Patroni's example configuration does (see ``haproxy``).

Patroni's timings are short so that tests finish (``TIMINGS``; Patroni's
defaults are ttl 30, loop_wait 10, retry_timeout 10).  Everything lives
under ``/var/tmp/zopeless-patroni-<pid>-<n>/`` and the namespaces carry our
pid too, so ``remove_leftovers()`` (called by start()) removes what a
killed run left behind.  The module uses the standard library only.
"""

import contextlib
import glob
import itertools
import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from typing import Dict, List, Optional, Tuple

from .binaries import find_bindir
from .daemon import Daemon, kill_recorded
from .etcd import Etcd, find_program
from .haproxy import HAProxy
from .interfaces import ClusterError, IPatroniCluster, IPatroniMember
from .interfaces import SyncStandbyMissing
from .interfaces import implementer
from .layout import SUPERUSER, Layout
from .netns import NetworkHost, _ip
from .process import clean_env, last_error, pid_alive

__all__ = ['PatroniCluster', 'PatroniMember', 'TIMINGS',
           'remove_leftovers']

# ttl: how long a leader key outlives its holder's last update; loop_wait:
# Patroni's sleep between rounds; retry_timeout: how long DCS and
# PostgreSQL operations are retried before the leader demotes itself.
# Patroni requires loop_wait + 2 * retry_timeout <= ttl.
TIMINGS = {'ttl': 10, 'loop_wait': 2, 'retry_timeout': 4}
PREFIX = 'zopeless-patroni-'
PG_PORT = 5432
API_PORT = 8008
DBNAME = 'launchpad_ftest'
_POLL = 0.1
_counter = itertools.count(1)

# Cluster-wide settings, kept by Patroni in the DCS.
_PARAMETERS = {
    'max_connections': 100, 'max_prepared_transactions': 20,
    'max_wal_senders': 10, 'max_replication_slots': 10,
    'wal_keep_size': '128MB', 'hot_standby': 'on', 'wal_level': 'replica',
}


def _get(url: str, timeout: float = 2) -> Tuple[int, dict]:
    """(HTTP status, JSON body) of GET url; (0, {}) when unreachable."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b'{}')
    except urllib.error.HTTPError as e:
        with contextlib.suppress(ValueError):
            return e.code, json.loads(e.read() or b'{}')
        return e.code, {}
    except (OSError, ValueError):
        return 0, {}


@implementer(IPatroniMember)
class PatroniMember:
    """See IPatroniMember."""

    port = PG_PORT
    superuser = SUPERUSER

    def __init__(self, cluster: 'PatroniCluster', name: str,
                 host: NetworkHost) -> None:
        self.cluster = cluster
        self.name = name
        self.netns = host
        self.host = host.address
        self.directory = os.path.join(cluster.directory, name)
        self.datadir = os.path.join(self.directory, 'data')
        self.config = os.path.join(self.directory, 'patroni.yml')
        self.daemon = Daemon('patroni', [
            find_program('patroni', 'patroni'), self.config],
            self.directory, cluster.user, netns=host.name)

    def __repr__(self) -> str:
        return '<PatroniMember %s %s:%s>' % (self.name, self.host, self.port)

    @property
    def api(self) -> str:
        return 'http://%s:%d' % (self.host, API_PORT)

    def _settings(self, bootstrap: dict) -> dict:
        # Patroni reads YAML, of which JSON is a part.
        address = '%s:%%d' % self.host
        trust = ['local all all trust', 'host all all 127.0.0.1/32 trust',
                 'host all all 10.213.0.0/16 trust',
                 'host replication all 10.213.0.0/16 trust']
        return {
            'scope': self.cluster.scope, 'namespace': '/zopeless/',
            'name': self.name,
            'log': {'level': 'INFO'},
            'restapi': {'listen': address % API_PORT,
                        'connect_address': address % API_PORT},
            # etcd advertises its loopback URL, which inside the
            # namespace is another host's: use the address given only.
            'etcd3': {'hosts': [self.cluster.etcd.endpoint(
                self.netns.gateway)], 'use_proxies': True},
            'bootstrap': bootstrap,
            'watchdog': {'mode': 'off'},
            'postgresql': {
                'listen': address % PG_PORT,
                'connect_address': address % PG_PORT,
                'data_dir': self.datadir, 'bin_dir': self.cluster.bindir,
                'pgpass': os.path.join(self.directory, 'pgpass'),
                'use_unix_socket': True,
                # A spread checkpoint makes a new replica wait minutes.
                'basebackup': [{'checkpoint': 'fast'}],
                'authentication': {
                    'superuser': {'username': SUPERUSER},
                    'replication': {'username': 'replicator'},
                    'rewind': {'username': SUPERUSER}},
                'pg_hba': trust,
                'parameters': {'unix_socket_directories': self.directory,
                               'fsync': 'off', 'shared_buffers': '16MB'},
            },
        }

    def write_config(self, bootstrap: dict) -> None:
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        with open(self.config, 'w') as f:
            json.dump(self._settings(bootstrap), f, indent=1)
        self.cluster.chown(self.directory, self.config)

    def start(self) -> 'PatroniMember':
        self.daemon.start(lambda: _get(self.api + '/patroni')[0] != 0)
        return self

    def stop(self) -> None:
        self.daemon.stop()

    def is_running(self) -> bool:
        return self.daemon.pid is not None

    def log_tail(self) -> str:
        return self.daemon.log_tail()

    def status(self) -> dict:
        """Patroni's /patroni answer ({} when unreachable)."""
        return _get(self.api + '/patroni')[1]

    def is_leader(self) -> bool:
        return _get(self.api + '/primary')[0] == 200

    def kill_patroni(self) -> Optional[int]:
        """SIGKILL its Patroni only: its PostgreSQL keeps running as it
        was (a leader's as a writable primary, with nobody to demote it).
        Returns the postmaster's pid, if one runs."""
        self.daemon.send(signal.SIGKILL)
        self.daemon.stop()      # reaps it
        return self.postmaster_pid()

    def kill_postgres(self, timeout: float = 30) -> None:
        """SIGKILL the postmaster its killed Patroni left running; wait
        until none of its processes remain."""
        if self.is_running():
            raise ClusterError('%s: Patroni runs, it manages PostgreSQL'
                               % self.name)
        pid = self.postmaster_pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        # Its backends leave when they notice the postmaster's death.
        deadline = time.monotonic() + timeout
        while self.pids():
            if time.monotonic() > deadline:
                raise ClusterError('%s: PostgreSQL still runs: %r' % (
                    self.name, self.pids()))
            time.sleep(_POLL)

    def postmaster_pid(self) -> Optional[int]:
        with contextlib.suppress(OSError, ValueError, IndexError):
            with open(os.path.join(self.datadir, 'postmaster.pid')) as f:
                pid = int(f.readline())
            return pid if pid_alive(pid) else None
        return None

    def pids(self) -> List[int]:
        """Every process of the member: Patroni and its PostgreSQL."""
        out = _ip('netns', 'pids', self.netns.name, check=False).stdout
        return [int(p) for p in out.split()]

    def psql(self, sql: str, dbname: str = 'postgres') -> str:
        psql = os.path.join(self.cluster.bindir, 'psql')
        result = subprocess.run(
            [psql, '-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-h',
             self.directory, '-p', str(PG_PORT), '-U', SUPERUSER, '-d',
             dbname, '-c', sql], capture_output=True, text=True,
            env=clean_env(), timeout=60)
        if result.returncode != 0:
            raise ClusterError('psql on %s failed: %s' % (
                self.name, last_error(result.stderr + result.stdout)))
        return result.stdout.strip()


@implementer(IPatroniCluster)
class PatroniCluster:
    """See IPatroniCluster."""

    def __init__(self, members: int = 3, synchronous: bool = False,
                 **timings: int) -> None:
        self.size = members
        self.synchronous = synchronous
        self.timings = dict(TIMINGS, **timings)
        n = next(_counter)
        self.scope = 'zl%d-%d' % (os.getpid(), n)
        self.directory = '/var/tmp/%s%d-%d' % (PREFIX, os.getpid(), n)
        # PostgreSQL, and so Patroni, refuses to run as root.
        runas = Layout(self.directory)._choose_runas()
        self.user = self._kwargs_of(runas) if runas else {}
        self.bindir = find_bindir()
        self.members: List[PatroniMember] = []
        self.etcd: Optional[Etcd] = None
        self.haproxy: Optional[HAProxy] = None
        self.proxies: List[HAProxy] = []   # add_haproxy()'s
        self.started_in: Optional[float] = None

    @staticmethod
    def _kwargs_of(name: str) -> dict:
        pw = pwd.getpwnam(name)
        return dict(user=pw.pw_uid, group=pw.pw_gid, extra_groups=[])

    def __repr__(self) -> str:
        return '<PatroniCluster %s %s>' % (self.scope, self.members)

    def chown(self, *paths: str) -> None:
        for path in paths:
            if self.user:
                os.chown(path, self.user['user'], self.user['group'])

    # -- start and stop --------------------------------------------------

    def start(self) -> 'PatroniCluster':
        """Start etcd, the members (the first bootstraps), HAProxy; wait
        until the leader has every replica streaming."""
        began = time.monotonic()
        remove_leftovers()
        os.makedirs(self.directory, mode=0o755)
        self.chown(self.directory)
        try:
            self._start()
        except BaseException:
            self.destroy()
            raise
        self.started_in = time.monotonic() - began
        return self

    def _start(self) -> None:
        hosts = [NetworkHost().create() for _ in range(self.size)]
        for host in hosts:
            host.join_peers()
        self.members = [PatroniMember(self, 'm%d' % (i + 1), host)
                        for i, host in enumerate(hosts)]
        self.etcd = Etcd(self.directory, [h.gateway for h in hosts],
                         self.user).start()
        bootstrap = {
            'dcs': dict(self.timings, synchronous_mode=self.synchronous,
                        maximum_lag_on_failover=16 * 1024 * 1024,
                        postgresql={'use_pg_rewind': True,
                                    'use_slots': True,
                                    'parameters': _PARAMETERS}),
            'initdb': [{'encoding': 'UTF8'}, {'locale': 'C'}, 'no-sync']}
        for member in self.members:
            member.write_config(bootstrap)
        first = self.members[0].start()
        self.wait_leader(timeout=120)
        self._make_database(first)
        for member in self.members[1:]:
            member.start()
        self.wait_replicas(timeout=120)
        self.haproxy = HAProxy(self.directory, [
            (m.name, m.host, PG_PORT, API_PORT) for m in self.members],
            self.user).start()

    def _make_database(self, leader: PatroniMember) -> None:
        leader.psql("CREATE ROLE launchpad LOGIN")
        leader.psql("CREATE DATABASE %s OWNER launchpad" % DBNAME)
        leader.psql('CREATE TABLE ha_unit (uid text PRIMARY KEY, port '
                    'integer NOT NULL); ALTER TABLE ha_unit OWNER TO '
                    'launchpad', dbname=DBNAME)

    def add_haproxy(self, members: List[PatroniMember], check: str = 'tcp',
                    balance: Optional[str] = 'first',
                    checks: str = 'inter 1s fall 2 rise 1 on-marked-down '
                    'shutdown-sessions') -> HAProxy:
        """Start another HAProxy in front of ``members``, in that order,
        configured as some users do (by default a plain TCP check and
        ``balance first``); stopped by destroy() if not before."""
        proxy = HAProxy(self.directory, [
            (m.name, m.host, PG_PORT, API_PORT) for m in members],
            self.user, checks=checks, check=check, balance=balance,
            name='haproxy-%d' % (len(self.proxies) + 1))
        self.proxies.append(proxy)
        return proxy.start()

    def destroy(self) -> None:
        """Stop everything started and remove every file."""
        for proxy in self.proxies:
            proxy.stop()
        self.proxies = []
        if self.haproxy is not None:
            self.haproxy.stop()
        for member in self.members:
            member.daemon.stop(signal.SIGKILL)
            member.netns.remove()   # kills its PostgreSQL too
        if self.etcd is not None:
            self.etcd.stop()
        shutil.rmtree(self.directory, ignore_errors=True)
        self.members, self.etcd, self.haproxy = [], None, None

    # -- what Patroni says -------------------------------------------------

    def member(self, name: str) -> PatroniMember:
        return [m for m in self.members if m.name == name][0]

    def leader(self) -> Optional[PatroniMember]:
        """The member whose REST API answers /primary with 200, if one."""
        for member in self.members:
            if not member.netns.is_cut and member.is_leader():
                return member
        return None

    def wait_leader(self, other_than: Optional[PatroniMember] = None,
                    timeout: float = 60) -> PatroniMember:
        """Wait until a member (not ``other_than``) is the leader."""
        deadline = time.monotonic() + timeout
        while True:
            leader = self.leader()
            if leader is not None and leader is not other_than:
                return leader
            if time.monotonic() > deadline:
                raise ClusterError('no new Patroni leader within %s s' %
                                   timeout)
            time.sleep(_POLL)

    def topology(self) -> Dict[str, dict]:
        """Patroni's /cluster answer by member name, asked of any member."""
        for member in self.members:
            if member.netns.is_cut:
                continue
            status, body = _get(member.api + '/cluster')
            if status == 200:
                return {m['name']: m for m in body.get('members', ())}
        return {}

    def wait_replicas(self, timeout: float = 60,
                      sync_grace: Optional[float] = None) -> None:
        """See IPatroniCluster.wait_replicas."""
        deadline = time.monotonic() + timeout
        unsynced_since = None
        while True:
            found = self.topology()
            replicas = [m for m in found.values() if m.get('role') in (
                'replica', 'sync_standby')]
            # Under synchronous_mode only a synchronous standby may be
            # promoted: a cluster without one cannot fail over.
            synced = not self.synchronous or any(
                m.get('role') == 'sync_standby' for m in replicas)
            running = len(found) == self.size and \
                len(replicas) == self.size - 1 and all(
                    m.get('state') in ('running', 'streaming')
                    for m in replicas)
            caught_up = [m for m in replicas if m.get('lag', 0) == 0]
            if running and synced and len(caught_up) == len(replicas):
                return
            now = time.monotonic()
            # Patroni names a replica that streams caught up its
            # synchronous standby within a loop or two, when it can.
            if not (running and caught_up and not synced):
                unsynced_since = None
            elif unsynced_since is None:
                unsynced_since = now
            elif sync_grace is not None and \
                    now - unsynced_since > sync_grace:
                raise SyncStandbyMissing(
                    'a replica streams, caught up, but none was made the '
                    'synchronous standby within %s s: %r'
                    % (sync_grace, found))
            if now > deadline:
                raise ClusterError('replicas not streaming within %s s: %r'
                                   % (timeout, found))
            time.sleep(_POLL)

    # -- faults --------------------------------------------------------------

    def patronictl(self, *args: str) -> str:
        config = os.path.join(self.directory, 'patronictl.yml')
        if not os.path.exists(config):
            with open(config, 'w') as f:
                json.dump({'scope': self.scope, 'namespace': '/zopeless/',
                           'etcd3': {'hosts': [self.etcd.endpoint()]}}, f)
        result = subprocess.run(
            [find_program('patronictl', 'patroni'), '-c', config] +
            list(args), capture_output=True, text=True, env=clean_env(),
            timeout=120)
        if result.returncode != 0:
            raise ClusterError('patronictl %s failed: %s' % (
                ' '.join(args), last_error(result.stderr + result.stdout)))
        return result.stdout

    def switchover(self, candidate: Optional[PatroniMember] = None) -> None:
        leader = self.leader()
        args = ['switchover', '--force', '--leader', leader.name]
        if candidate is not None:
            args += ['--candidate', candidate.name]
        # patronictl says so, and exits 0, when Patroni refused.
        out = self.patronictl(*args)
        if 'failed' in out.lower():
            raise ClusterError('patronictl switchover: %s' % out.strip())

    def restart(self, member: PatroniMember) -> None:
        self.patronictl('restart', '--force', self.scope, member.name)

    def reinit(self, member: PatroniMember) -> None:
        """patronictl reinit of ``member``: a new copy of the leader."""
        self.patronictl('reinit', '--force', '--wait', self.scope,
                        member.name)

    def hang(self, member: PatroniMember) -> List[int]:
        """SIGSTOP every process of ``member``; resume() undoes it."""
        pids = member.pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        return pids

    def resume(self, pids: List[int]) -> None:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    # -- cost ----------------------------------------------------------------

    def pids(self) -> List[int]:
        found = [p for m in self.members for p in m.pids()]
        for daemon in (self.etcd, self.haproxy):
            if daemon is not None and daemon.daemon.pid:
                found.append(daemon.daemon.pid)
        return found

    def usage(self) -> Tuple[float, int]:
        """(CPU seconds used, resident kB now) of every process started."""
        cpu, rss = 0.0, 0
        tick = os.sysconf('SC_CLK_TCK')
        for pid in self.pids():
            with contextlib.suppress(OSError, ValueError, IndexError):
                with open('/proc/%d/stat' % pid) as f:
                    fields = f.read().rsplit(')', 1)[1].split()
                cpu += (int(fields[11]) + int(fields[12])) / tick
                with open('/proc/%d/status' % pid) as f:
                    rss += int(re.search(r'VmRSS:\s+(\d+)',
                                         f.read()).group(1))
        return cpu, rss


def remove_leftovers() -> List[str]:
    """Remove the clusters of test processes that died; their directories.
    (Their namespaces, and so their members, go with NetworkHost's.)"""
    removed = []
    for directory in glob.glob('/var/tmp/%s*-*' % PREFIX):
        found = re.match(r'(\d+)-\d+$', directory.rsplit(PREFIX, 1)[1])
        if not found or pid_alive(int(found.group(1))):
            continue
        kill_recorded(directory, ['etcd'] + [
            os.path.basename(p)[:-len('.pid')] for p in
            glob.glob(os.path.join(directory, 'haproxy*.pid'))])
        for pidfile in glob.glob(os.path.join(directory, '*',
                                              'patroni.pid')):
            kill_recorded(os.path.dirname(pidfile), ['patroni'])
        shutil.rmtree(directory, ignore_errors=True)
        removed.append(directory)
    return removed
