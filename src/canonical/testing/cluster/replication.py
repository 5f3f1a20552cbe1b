"""Primaries and streaming standbys of the private cluster.

A ``ReplicationNode`` is a ``Cluster`` that can stream to standbys or be
one.  ``make_standby()`` clones a running primary with
``pg_basebackup -R -X stream``; ``promote()`` ends a standby's recovery;
``fence()`` makes a primary refuse writes in place; ``follow()`` turns an
old primary into a standby of its successor (a switchover: ``pg_rewind``,
or a fresh base backup when rewinding is impossible).

Every node keeps its own settings in its state (see ``settings``), written
at each start, so nothing a node was told leaks into the nodes cloned or
rewound from it.  That matters most for ``synchronous_standby_names``: a
standby that inherited its primary's value would, once promoted, wait at
every commit for standbys it does not have, for ever.  The clone's
``postgresql.auto.conf`` (where ``ALTER SYSTEM`` and ``-R`` write) is
adopted the same way: ``primary_conninfo`` becomes a node setting, and an
inherited ``synchronous_standby_names`` is dropped.
"""

import contextlib
import os
import re
import shutil
import subprocess
import time
from typing import List, Optional

from .interfaces import INetworkHost, IReplicationNode, ReplicationError
from .interfaces import implementer
from .process import last_error
from .server import START_TIMEOUT, Cluster

__all__ = ['ReplicationNode', 'REPLICATION_SETTINGS']

# What every node runs with, on top of the plain cluster's settings.
REPLICATION_SETTINGS = {
    # pg_rewind needs hint bits in the WAL (or data checksums).
    'wal_log_hints': True,
    # A standby stopped for a while can catch up from the primary's WAL.
    'wal_keep_size': '256MB',
    # A promoted standby or a crashed primary notices dead peers sooner
    # than the one-minute default.
    'wal_sender_timeout': '5s',
    'wal_receiver_timeout': '5s',
    'wal_receiver_status_interval': '1s',
}

_AUTO_CONF = 'postgresql.auto.conf'
_POLL = 0.02


def _parse_auto_conf(text: str) -> dict:
    """name -> raw value of the settings in a postgresql.auto.conf."""
    found = {}
    for line in text.splitlines():
        m = re.match(r"\s*(\w+)\s*=\s*'((?:[^']|'')*)'", line)
        if m:
            found[m.group(1)] = m.group(2).replace("''", "'")
    return found


@implementer(IReplicationNode)
class ReplicationNode(Cluster):
    """See IReplicationNode."""

    def __init__(self, base: Optional[str] = None, name: Optional[str] = None,
                 fsync: Optional[bool] = None, bindir: Optional[str] = None,
                 netns: Optional[INetworkHost] = None):
        super().__init__(base, fsync=fsync, bindir=bindir, netns=netns)
        if 'name' not in self._state:
            with self._lock():
                self._state['name'] = name or os.path.basename(self.base)
                self._state['replication'] = True
                settings = dict(REPLICATION_SETTINGS)
                settings.update(self.settings())
                self._state['settings'] = settings
                self._save_state()

    def __repr__(self):
        return '<ReplicationNode %s %s:%s>' % (self.name, self.host,
                                               self.port)

    def _start_settings(self) -> dict:
        # postgresql.conf came from the node that ran initdb: its socket
        # directory is not ours.
        settings = self.settings()
        settings['unix_socket_directories'] = self.rundir
        return settings

    @property
    def name(self) -> str:
        return self._state['name']

    # -- asking the server -------------------------------------------------

    def _value(self, sql: str) -> str:
        return self.psql(sql).strip()

    def is_standby(self) -> bool:
        return self._value('SELECT pg_is_in_recovery()') == 't'

    def timeline(self) -> int:
        # The last checkpoint's timeline lags behind a promotion until the
        # next checkpoint; the current WAL file's name does not.  A standby
        # has no current WAL file: it follows what it receives.
        return int(self._value(
            'SELECT CASE WHEN pg_is_in_recovery() THEN coalesce('
            '(SELECT received_tli FROM pg_stat_wal_receiver), '
            '(SELECT timeline_id FROM pg_control_checkpoint())) '
            "ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), "
            '1, 8))::bit(32)::int END'))

    def system_identifier(self) -> str:
        return self._value('SELECT system_identifier FROM pg_control_system()')

    def wal_lsn(self) -> str:
        return self._value(
            'SELECT CASE WHEN pg_is_in_recovery() '
            'THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END')

    def _wait_for(self, sql: str, what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self._value(sql) != 't':
            if time.monotonic() > deadline:
                raise ReplicationError('%r: timed out waiting for %s'
                                       % (self, what))
            time.sleep(_POLL)

    def wait_replayed(self, lsn: str, timeout: float = 30) -> None:
        self._wait_for("SELECT pg_last_wal_replay_lsn() >= '%s'::pg_lsn"
                       % lsn, 'replay of %s' % lsn, timeout)

    def wait_streaming(self, timeout: float = 30) -> None:
        """Wait until this standby streams from its primary."""
        self._wait_for("SELECT EXISTS (SELECT 1 FROM pg_stat_wal_receiver "
                       "WHERE status = 'streaming')", 'streaming', timeout)

    def synchronous_names(self) -> List[str]:
        value = self.settings().get('synchronous_standby_names') or ''
        return re.findall(r'"([^"]+)"', value)

    # -- standbys ----------------------------------------------------------

    def make_standby(self, base: str, name: Optional[str] = None,
                     synchronous: bool = False,
                     netns: Optional[INetworkHost] = None
                     ) -> 'ReplicationNode':
        standby = ReplicationNode(base, name=name, fsync=self.fsync,
                                  bindir=self.bindir, netns=netns)
        if standby.is_initialised():
            raise ReplicationError('%s already holds a cluster' % base)
        if netns is not None:
            self.allow(netns.network, replication=True)
        standby._clone(self)
        standby.start()
        standby.wait_streaming()
        if synchronous:
            self.set_synchronous(self.synchronous_names() + [standby.name])
        return standby

    def set_synchronous(self, names: List[str]) -> None:
        value = 'FIRST %d (%s)' % (len(names), ', '.join(
            '"%s"' % n for n in names)) if names else None
        self.configure(synchronous_standby_names=value)
        if names:
            self._wait_for(
                "SELECT count(*) = %d FROM pg_stat_replication "
                "WHERE sync_state = 'sync'" % len(names),
                'synchronous standbys %s' % names, 30)

    def _conninfo(self, primary: 'ReplicationNode') -> str:
        # A server in a namespace cannot reach another namespace's (or the
        # machine's) loopback; a unix socket crosses network namespaces.
        host = primary.host
        if self.netns is not None and self.netns != primary.netns:
            host = primary.rundir
        return 'host=%s port=%s user=%s application_name=%s' % (
            host, primary.port, primary.superuser, self.name)

    def _clone(self, primary: 'ReplicationNode') -> None:
        """Fill the data directory with a base backup of ``primary``."""
        with self._lock():
            self._make_area()
            tmp = self.datadir + '.basebackup'
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(self.datadir, ignore_errors=True)
            result = self._run(
                [os.path.join(self.bindir, 'pg_basebackup'), '-D', tmp,
                 '-d', self._conninfo(primary), '-X', 'stream', '-R',
                 '-c', 'fast', '--no-sync'],
                timeout=300, in_netns=True)
            if result.returncode != 0:
                shutil.rmtree(tmp, ignore_errors=True)
                raise ReplicationError('pg_basebackup failed: %s' % last_error(
                    result.stderr + result.stdout))
            self._adopt_auto_conf(tmp, self._conninfo(primary))
            self._write_hba(tmp)
            self._finish_initialisation(tmp, primary,
                                        'standby of %s' % primary.name)

    def initialise_from(self, seed: 'ReplicationNode') -> None:
        """Initialise this node as a copy of the stopped node ``seed``: a
        new primary with the seed's databases, much faster than initdb
        and loading them again (tests need many)."""
        if seed.is_running():
            raise ReplicationError('%r must be stopped to be copied' % seed)
        if self.is_initialised():
            raise ReplicationError('%s already holds a cluster' % self.base)
        with self._lock():
            self._make_area()
            tmp = self.datadir + '.copy'
            shutil.rmtree(tmp, ignore_errors=True)
            # cp -a keeps the server user as owner, which copytree would not.
            result = subprocess.run(['cp', '-a', seed.datadir, tmp],
                                    capture_output=True, text=True)
            if result.returncode != 0:
                raise ReplicationError('cannot copy %s: %s' % (
                    seed.datadir, last_error(result.stderr)))
            for name in ('postmaster.pid', 'postmaster.opts'):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(tmp, name))
            self._write_hba(tmp)
            self._finish_initialisation(tmp, seed, 'copy of %s' % seed.name)

    def _make_area(self) -> None:
        self._plan_layout()
        if os.path.dirname(self.area) != self.base:
            os.makedirs(self.area, mode=0o755, exist_ok=True)
        self._mkdir_owned(self.area, 0o755)
        self._mkdir_owned(self.rundir, 0o755)

    def _finish_initialisation(self, tmp: str, origin: 'ReplicationNode',
                               how: str) -> None:
        os.rename(tmp, self.datadir)
        self._state.update(bindir=self.bindir, roles=True,
                           auth_method=origin._state.get('auth_method'))
        self._save_state()
        with open(os.path.join(self.area, 'initialised'), 'w') as f:
            f.write(how + '\n')

    def _adopt_auto_conf(self, datadir: str, conninfo: str) -> None:
        """Move what -R (or ALTER SYSTEM) left in postgresql.auto.conf into
        this node's settings, dropping what must not be inherited."""
        path = os.path.join(datadir, _AUTO_CONF)
        try:
            with open(path) as f:
                found = _parse_auto_conf(f.read())
        except OSError:
            found = {}
        settings = self.settings()
        for name in ('synchronous_standby_names', 'default_transaction_'
                     'read_only', 'primary_conninfo', 'primary_slot_name'):
            settings.pop(name, None)
            found.pop(name, None)
        settings['primary_conninfo'] = conninfo
        settings.update({k: v for k, v in found.items()
                         if k not in settings})
        self._state['settings'] = settings
        self._write_owned(path, '# Emptied by canonical.testing.cluster: '
                          'the node settings live in zopeless.conf\n')

    def _remember(self, **values) -> None:
        """Record (None: forget) values in the state file."""
        with self._lock():
            for key, value in values.items():
                if value is None:
                    self._state.pop(key, None)
                else:
                    self._state[key] = value
            self._save_state()

    # -- failover ----------------------------------------------------------

    def promote(self, timeout: float = 30) -> None:
        if not self.is_standby():
            raise ReplicationError('%r is not a standby' % self)
        result = self.pg_ctl('promote', '-w', '-t', str(int(timeout)),
                             timeout=timeout + 30)
        if result.returncode != 0 and self.is_standby():
            raise ReplicationError('pg_ctl promote failed: %s' % last_error(
                result.stderr + result.stdout))
        self._wait_for('SELECT NOT pg_is_in_recovery()', 'promotion',
                       timeout)
        # A promoted standby has no standbys of its own yet.
        self.configure(synchronous_standby_names=None)

    def fence(self) -> None:
        self.configure(default_transaction_read_only=True)

    def unfence(self) -> None:
        self.configure(default_transaction_read_only=None)

    def pause_streaming(self) -> None:
        """Stop receiving WAL (the standby starts to lag behind)."""
        conninfo = self.settings().get('primary_conninfo')
        if conninfo:
            self._remember(paused_conninfo=conninfo)
        self.configure(primary_conninfo='')
        self._wait_for('SELECT NOT EXISTS '
                       '(SELECT 1 FROM pg_stat_wal_receiver)',
                       'the WAL receiver to stop', 30)

    def resume_streaming(self) -> None:
        """Undo pause_streaming()."""
        conninfo = self._state.get('paused_conninfo')
        self._remember(paused_conninfo=None)
        if conninfo:
            self.configure(primary_conninfo=conninfo)
            self.wait_streaming()

    def follow(self, primary: 'ReplicationNode', rewind: bool = True) -> None:
        if self.is_running():
            self.stop('fast')
        rewound = False
        if rewind:
            rewound = self._rewind(primary)
        if not rewound:
            self._clone(primary)
        self.start()
        self.wait_streaming()

    def _rewind(self, primary: 'ReplicationNode') -> bool:
        """pg_rewind onto ``primary``; False when it could not."""
        # pg_rewind reads the source's timeline from its control file, which
        # a promotion only updates at the next checkpoint: without one it
        # finds "no rewind required" and leaves a standby that cannot
        # follow.
        primary.psql('CHECKPOINT')
        with self._lock():
            conninfo = self._conninfo(primary)
            result = self._run(
                [os.path.join(self.bindir, 'pg_rewind'), '-D', self.datadir,
                 '--source-server', conninfo + ' dbname=postgres', '-R',
                 '--no-sync'], timeout=START_TIMEOUT + 240, in_netns=True)
            if result.returncode != 0:
                return False
            self._adopt_auto_conf(self.datadir, conninfo)
            self._write_hba()
            self._save_state()
            return True
