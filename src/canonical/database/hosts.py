"""Choosing a server of a host list: fast failover, never a demoted primary.

libpq tries the hosts of ``host=h1,h2`` in order, each for up to
connect_timeout.  When the first host has vanished silently (dropped
packets, no reset), every connection attempt pays that timeout before the
next host is even tried.  Here hosts are tried one at a time by the
library instead:

* the host that last took a connection first, then the others in list
  order;
* a host whose attempt (or whose established connection) timed out is
  *suspect*: while another host can be tried it is skipped, and a
  background thread probes it until it answers again.  Only when every
  host is suspect are they tried in the foreground;
* a writer's connection is asked its server's identity (see identity.py),
  and a server on an older timeline of a system this process already
  reached on a later one is refused: a demoted primary that still takes
  writes, after a partition healed, say.

A single host is connected to directly, as before.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Dict, List, Optional

import psycopg2
from zope.interface import implementer

from canonical.database.classify import connect_failure_kind
from canonical.database.classify import is_disconnect
from canonical.database.classify import server_message
from canonical.database.identity import ServerConnection
from canonical.database.identity import ServerIdentity
from canonical.database.identity import identify
from canonical.database.interfaces import IDatabaseConfig
from canonical.database.interfaces import IDatabaseServers
from canonical.database.perdatabase import PerDatabase

__all__ = ['DatabaseServers', 'servers_for', 'split_hosts']

log = logging.getLogger('canonical.database.hosts')

# Seconds between two probes of a suspect host in the background.
_PROBE_INTERVAL = 0.5


def split_hosts(params: Dict[str, str]) -> List[Dict[str, str]]:
    """The per-host libpq parameters of a (maybe) multi-host parameter set:
    one dict of host/hostaddr/port per host, or ``[{}]`` for one host (and
    for lists libpq itself would reject, which it then does)."""
    keys = [k for k in ('host', 'hostaddr', 'port') if params.get(k)]
    lists = {k: params[k].split(',') for k in keys}
    count = max([len(v) for v in lists.values()] or [1])
    if count == 1 or params.get('load_balance_hosts'):
        return [{}]
    entries = []
    for i in range(count):
        entry = {}
        for key, values in lists.items():
            if len(values) == 1:
                entry[key] = values[0]  # one port for every host
            elif len(values) == count:
                entry[key] = values[i]
            else:
                return [{}]
        entries.append(entry)
    return entries


class _Host:
    """One entry of the list and what we know of it."""

    def __init__(self, index: int, params: Dict[str, str]) -> None:
        self.index = index
        self.params = params
        self.label = '%s:%s' % (params.get('host') or params.get('hostaddr')
                                or '', params.get('port') or '')
        self.last_ok = -1.0
        self.suspect_since: Optional[float] = None


@implementer(IDatabaseServers)
class DatabaseServers:
    """See IDatabaseServers; one per database and process."""

    def __init__(self, config: IDatabaseConfig) -> None:
        params = config.connect_kwargs()
        self._hosts = [_Host(i, p) for i, p in
                       enumerate(split_hosts(params))]
        self._lock = threading.Lock()
        self._timelines: Dict[str, int] = {}
        self._prober: Optional[threading.Thread] = None
        self._probe_config: Optional[IDatabaseConfig] = None
        self._stop = threading.Event()
        self._unidentified = False
        self.timeouts: Dict[str, int] = {}
        self.stale_refused = 0
        self.timeline_changes = 0

    @property
    def hosts(self) -> List[str]:
        return [h.label for h in self._hosts]

    def entries(self) -> List[tuple]:
        """(label, per-host libpq parameters) of each host of the list;
        one entry with no parameters for a single host."""
        return [(h.label, dict(h.params)) for h in self._hosts]

    def suspect(self, label: str, config: IDatabaseConfig) -> None:
        """The host ``label`` timed out (for a reader, say): skip it and
        probe it in the background, as for a writer's."""
        for host in self._hosts:
            if host.label == label:
                self._suspect(host, config)

    def suspects(self) -> List[str]:
        with self._lock:
            return [h.label for h in self._hosts
                    if h.suspect_since is not None]

    # -- connecting --------------------------------------------------------

    def _order(self) -> List[_Host]:
        with self._lock:
            hosts = sorted(self._hosts, key=lambda h: (-h.last_ok, h.index))
            ready = [h for h in hosts if h.suspect_since is None]
            if ready:
                return ready
            return sorted(hosts, key=lambda h: h.suspect_since)

    def connect(self, config: IDatabaseConfig) -> Any:
        self._probe_config = config
        kwargs = config.connect_kwargs()
        errors = []
        for host in self._order():
            try:
                return self._connect_host(config, kwargs, host)
            except psycopg2.Error as e:
                if len(self._hosts) == 1:
                    raise
                errors.append('%s: %s' % (host.label, server_message(e)))
        # As libpq does for a host list: every host's reason, one per line.
        raise psycopg2.OperationalError('\n'.join(errors))

    def _connect_host(self, config: IDatabaseConfig, kwargs: Dict[str, str],
                      host: _Host) -> Any:
        try:
            raw = psycopg2.connect(connection_factory=ServerConnection,
                                   **dict(kwargs, **host.params))
        except psycopg2.Error as e:
            if connect_failure_kind(e) == 'timeout':
                self._suspect(host, config)
            raise
        raw.host_label = host.label
        identity = self._identify(raw) if config.writes else None
        if identity is not None:
            if identity.read_only:
                # What libpq could not tell: a pooler passed on a stale
                # report, the server behind it is read-only now.
                raw.close()
                raise psycopg2.OperationalError(
                    'server at %s: session is read-only' % host.label)
            if self._refuse_stale(identity):
                raw.close()
                raise psycopg2.OperationalError(
                    'server at %s is a demoted primary: timeline %s, while '
                    'this process already wrote to timeline %s'
                    % (host.label, identity.timeline,
                       self._timelines.get(identity.system)))
        with self._lock:
            host.last_ok = time.monotonic()
            host.suspect_since = None
        return raw

    def _identify(self, raw: Any) -> Optional[ServerIdentity]:
        try:
            return identify(raw)
        except psycopg2.Error as e:
            if raw.closed or is_disconnect(e, raw):
                raw.close()
                raise
            # A server too old, or a role not allowed, to say: connect
            # without the checks it would have made possible.
            if not self._unidentified:
                log.warning('Cannot ask %s for its timeline (%s): a demoted '
                            'primary will not be told apart.',
                            raw.info.host, server_message(e))
            self._unidentified = True
            return None

    # -- timelines ---------------------------------------------------------

    def _refuse_stale(self, identity: ServerIdentity) -> bool:
        with self._lock:
            if identity.timeline is None:
                return False
            latest = self._timelines.get(identity.system, 0)
            if identity.timeline < latest:
                self.stale_refused += 1
                return True
            if identity.timeline > latest:
                self._timelines[identity.system] = identity.timeline
                self.timeline_changes += 1
            return False

    def is_stale(self, identity: ServerIdentity) -> bool:
        # Asked at every begin(), so without the lock: one dict read is
        # atomic, and a timeline only ever grows.
        timeline = identity.timeline
        return timeline is not None and \
            timeline < self._timelines.get(identity.system, 0)

    # -- suspect hosts -----------------------------------------------------

    def note_lost(self, raw: Any, reason: str) -> None:
        if len(self._hosts) == 1 or 'timed out' not in reason.lower():
            return
        address = getattr(raw, 'host_label', None)
        for host in self._hosts:
            if host.label == address and self._probe_config is not None:
                self._suspect(host, self._probe_config)

    def _suspect(self, host: _Host, config: IDatabaseConfig) -> None:
        if len(self._hosts) == 1:
            return
        with self._lock:
            self.timeouts[host.label] = self.timeouts.get(host.label, 0) + 1
            if host.suspect_since is None:
                host.suspect_since = time.monotonic()
                log.warning('Database server %s does not answer; trying the '
                            'other hosts first.', host.label)
            self._probe_config = config
            self._stop.clear()
            if self._prober is None:
                self._prober = threading.Thread(
                    target=self._probe_suspects, daemon=True,
                    name='zopeless-host-probe')
                self._prober.start()

    def _probe_suspects(self) -> None:
        while True:
            with self._lock:
                suspects = [h for h in self._hosts
                            if h.suspect_since is not None]
                if not suspects or self._stop.is_set():
                    self._prober = None
                    return
                config = self._probe_config
            for host in suspects:
                self._probe(host, config)
            self._stop.wait(_PROBE_INTERVAL)

    def stop_probing(self) -> None:
        with self._lock:
            prober = self._prober
            self._stop.set()
        if prober is not None:
            # At most one connection attempt (connect_timeout) to wait for.
            prober.join(10)

    def _probe(self, host: _Host, config: IDatabaseConfig) -> None:
        kwargs = dict(config.connect_kwargs(), **host.params)
        try:
            raw = psycopg2.connect(**kwargs)
        except psycopg2.Error as e:
            if connect_failure_kind(e) == 'timeout':
                return
            # It answers (even if only to refuse): no longer a black hole.
        else:
            raw.close()
        with self._lock:
            if host.suspect_since is not None:
                host.suspect_since = None
                log.info('Database server %s answers again.', host.label)


# The process's servers for a configuration's database.
servers_for: PerDatabase[DatabaseServers] = PerDatabase(DatabaseServers)
