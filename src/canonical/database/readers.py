"""A thread's connection for read units: a standby when one is fit, else
(when the policy allows) the primary, read-only either way.

A read unit's session is read-only wherever it runs
(``default_transaction_read_only`` in its start-up packet: no round trip),
so a write fails at once with ReadOnlyUnitError, never reaches the primary
by a fallback, and autocommit units are covered too.

At each begin() the connection kept from the last unit is checked without
a round trip, from what the sampler (standbys.py) and the server's own
reports (in_hot_standby, sent by PostgreSQL 14 and later when it changes)
say: a standby promoted, gone, or lagging more than max_usable_lag is
left; a primary used as a fallback is left as soon as a standby is fit
again.  Only when the standby may not yet have replayed this process's
last commit does begin() ask it, and wait (bounded by
standby_catch_up_timeout) before trying the next standby, then the primary.
Reaching the primary waits through an outage as a writer does (the same
coordinator): with standbys fit, a read unit never waits for the primary.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Dict, List, Optional

import psycopg2
import psycopg2.extensions
from zope.interface import implementer

from canonical.database.classify import connect_failure_kind
from canonical.database.classify import is_read_only_error
from canonical.database.classify import server_message
from canonical.database.classify import with_sqlstate
from canonical.database.connection import ReconnectingConnection
from canonical.database.identity import ServerConnection
from canonical.database.interfaces import IDatabaseConfig
from canonical.database.interfaces import IDatabasePolicy
from canonical.database.interfaces import NoUsableStandbyError
from canonical.database.interfaces import ReadOnlyUnitError
from canonical.database.standbys import StandbyMonitor
from canonical.database.standbys import standbys_for
from canonical.database.standbys import parse_lsn
from canonical.database.rawsql import rollback_quietly

_IDLE = psycopg2.extensions.TRANSACTION_STATUS_IDLE

__all__ = ['ReaderConfig', 'StandbyConnection']

log = logging.getLogger('canonical.database.readers')

_READ_ONLY_OPTION = '-c default_transaction_read_only=on'
_READ_ONLY_SESSION = 'SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY'


@implementer(IDatabaseConfig)
class ReaderConfig:
    """The writer's configuration as a read unit connects with it: the
    same database (its database_key, so the process's coordinator and
    host list are shared).  ``target`` 'any' (a chosen standby): sessions
    read-only from their start-up packet.  ``target`` 'primary' (the
    fallback): the writer's own settings and checks (a demoted primary on
    an older timeline is refused, as for a writer), the session then made
    read-only by the reader (see StandbyConnection)."""

    def __init__(self, config: IDatabaseConfig, target: str = 'any') -> None:
        self.writer = getattr(config, 'writer', config)
        self.target = target
        self.writes = target == 'primary'

    def __getattr__(self, name: str) -> Any:
        if name == 'writer':
            raise AttributeError(name)  # not made by __init__ (a copy)
        return getattr(self.writer, name)

    def connect_kwargs(self) -> Dict[str, str]:
        kwargs = self.writer.connect_kwargs()
        if self.target == 'primary':
            return kwargs
        kwargs['target_session_attrs'] = self.target
        kwargs['options'] = (kwargs.get('options', '') + ' ' +
                             _READ_ONLY_OPTION).strip()
        return kwargs

    def replace(self, **changes: Any) -> 'ReaderConfig':
        return ReaderConfig(self.writer.replace(**changes), self.target)

    def __repr__(self) -> str:
        return '<ReaderConfig %s>' % self.writer.describe()


class StandbyConnection(ReconnectingConnection):
    """See the module docstring; an IDatabaseConnection.  ``policy`` is
    the policy of the unit about to begin (set by the transaction
    manager); ``standby`` the label of the standby in use, None on the
    primary."""

    def __init__(self, config: IDatabaseConfig,
                 monitor: StandbyMonitor) -> None:
        super().__init__(ReaderConfig(config))
        self.monitor = monitor
        self.policy: Optional[IDatabasePolicy] = None
        self.standby: Optional[str] = None
        # Figures for tests and benchmarks.
        self.on_primary = 0      # units run on the primary (fallbacks)
        self.on_standby = 0      # units run on a standby
        self.catch_up_waits = 0  # begin()s that waited for a replay

    def set_config(self, config: IDatabaseConfig) -> None:
        super().set_config(ReaderConfig(config))

    # -- choosing ----------------------------------------------------------

    def begin(self) -> Any:
        # The writer's begin() looks closer only at a connection that
        # seems unfit; a read unit's choice depends on more (the policy,
        # the standbys' state, this process's last commit): always.
        self._begin = None
        raw = self._usable_connection()
        if raw.get_transaction_status() != _IDLE:
            rollback_quietly(raw)
        self.outcome_token = None
        self._begin = self._begin_sql
        return raw

    def _usable_connection(self) -> Any:
        floor = self.monitor.floor_now()
        deadline = time.monotonic() + self.config.standby_catch_up_timeout
        reason = self.death_reason()
        if reason is None:
            verdict = self._kept(floor, deadline)
            if verdict is None:
                return self._count(self._raw)
            self._leave(verdict)
        elif self._raw is not None:
            self.discard(reason)
        return self._count(self._choose(floor, deadline))

    def _count(self, raw: Any) -> Any:
        if self.standby is None:
            self.on_primary += 1
        else:
            self.on_standby += 1
        return raw

    def _max_lag(self) -> Optional[float]:
        return getattr(self.policy, 'max_usable_lag', None)

    def _kept(self, floor: Optional[int],
              deadline: float) -> Optional[str]:
        """Why the live connection must be left for this unit, or None."""
        candidates = self._candidates(floor)
        if self.standby is None:
            if candidates:
                return 'a standby is fit for read units again'
            if self.policy is not None and \
                    not self.policy.allows_primary_fallback():
                return '%s never uses the primary' % (
                    type(self.policy).__name__)
            return self._unusable(self._raw)
        if self._raw.info.parameter_status('in_hot_standby') == 'off':
            self.monitor.note_role(self.standby, 'primary')
            return 'the standby %s was promoted' % self.standby
        if floor is None:
            return ('the position of this process\'s last commit is not '
                    'known (no primary answered)')
        if self.standby not in candidates:
            return ('the standby %s is not fit any more (down, promoted, or '
                    'lagging more than max_usable_lag)' % self.standby)
        if not self._caught_up(self._raw, self.standby, floor, deadline):
            return ('the standby %s has not replayed this process\'s last '
                    'commit in time' % self.standby)
        return None

    def _candidates(self, floor: Optional[int]) -> List[str]:
        if floor is None:
            return []  # only the primary is sure to have our commits
        return self.monitor.candidates(floor, self._max_lag())

    def _choose(self, floor: Optional[int], deadline: float) -> Any:
        for label in self._candidates(floor):
            raw = self._open_standby(label)
            if raw is None:
                continue
            if self._caught_up(raw, label, floor, deadline):
                self._attach(raw)
                self.standby = label
                self.monitor.attach(label, 1)
                return raw
            raw.close()
        if self.policy is not None and \
                not self.policy.allows_primary_fallback():
            raise NoUsableStandbyError(
                'No standby of %s may run this read unit (none answers, '
                'every one lags more than %s s, or none replayed this '
                'process\'s last commit within %s s), and %s does not fall '
                'back to the primary.  Retry later, or use '
                'StandbyDatabasePolicy.'
                % (self.config.describe(), self._max_lag() or
                   self.config.max_usable_lag,
                   self.config.standby_catch_up_timeout,
                   type(self.policy).__name__))
        # The primary, reached and checked as a writer does (waiting
        # through an outage), then read-only for the rest of the session.
        timeout = self.config.reconnect_timeout
        raw = self._coordinator.connect(
            ReaderConfig(self.config, 'primary'),
            None if timeout is None else time.monotonic() + timeout,
            reason='lost' if self._was_lost else None)
        try:
            raw.autocommit = True
            raw.cursor().execute(_READ_ONLY_SESSION)
        except psycopg2.Error as e:
            raw.close()
            raise self.lost_in_transaction(e) from e
        self._attach(raw)
        self.standby = None
        return raw

    def _unusable(self, raw: Any) -> Optional[str]:
        """Why the primary a read unit fell back to may not be kept."""
        server = getattr(raw, 'server', None)
        if server is not None and self._servers.is_stale(server):
            return ('the server is a demoted primary (timeline %s was '
                    'followed by a later one)' % server.timeline)
        if raw.info.parameter_status('in_hot_standby') == 'on':
            return 'the primary became a standby'
        return None

    def _open_standby(self, label: str) -> Any:
        kwargs = self.config.connect_kwargs()
        kwargs.update(self.monitor.host_params(label))
        try:
            raw = psycopg2.connect(connection_factory=ServerConnection,
                                   **kwargs)
        except psycopg2.Error as e:
            self.monitor.note_role(label, 'down')
            if connect_failure_kind(e) == 'timeout':
                self._servers.suspect(label, self.config)
            log.info('Standby %s refused a read unit: %s', label,
                     server_message(e))
            return None
        raw.host_label = label
        raw.autocommit = True
        if raw.info.parameter_status('in_hot_standby') == 'off':
            self.monitor.note_role(label, 'primary')
            raw.close()
            return None
        return raw

    def _caught_up(self, raw: Any, label: str, floor: int,
                   deadline: float) -> bool:
        """Whether the standby of ``raw`` has replayed ``floor``: from the
        sampler's figure when it says so, else asked, until ``deadline``."""
        if self.monitor.replayed(label) >= floor:
            return True
        self.catch_up_waits += 1
        delay = 0.002
        while True:
            try:
                cursor = raw.cursor()
                cursor.execute('SELECT pg_last_wal_replay_lsn()::text')
                replayed = parse_lsn(cursor.fetchone()[0])
            except psycopg2.Error:
                rollback_quietly(raw)
                return False
            self.monitor.note_replayed(label, replayed)
            if replayed >= floor:
                return True
            if time.monotonic() + delay > deadline:
                return False
            time.sleep(delay)  # bounded by standby_catch_up_timeout
            delay = min(delay * 2, 0.05)

    def _make_ready(self, raw: Any) -> None:
        # Nothing of the writer's (prepared transactions) belongs here.
        rollback_quietly(raw)

    def _leave(self, reason: str) -> None:
        """Close the live connection on purpose (not a loss)."""
        log.info('Read units leave %s: %s.',
                 self.standby or 'the primary', reason)
        self.close()

    def _forget_if_inherited(self) -> None:
        if self._inherited():
            # The parent's sampler does not run here: this process's own.
            self.standby = None
            self.monitor = standbys_for(self.config.writer)
            self.monitor.start()
        super()._forget_if_inherited()

    # -- ending ------------------------------------------------------------

    def _detach(self) -> None:
        if self.standby is not None:
            self.monitor.attach(self.standby, -1)
            self.standby = None

    def discard(self, reason: str) -> None:
        self._detach()
        super().discard(reason)

    def close(self) -> None:
        self._detach()
        super().close()

    # -- statements --------------------------------------------------------

    def statement_error(self, error: BaseException) -> BaseException:
        if not is_read_only_error(error):
            return super().statement_error(error)
        failure = ReadOnlyUnitError(
            '%s\n(This unit runs under %s, so it is read-only wherever it '
            'runs: nothing was written.  Write outside the policy\'s block, '
            'or under PrimaryDatabasePolicy.)'
            % (server_message(error), type(self.policy).__name__))
        failure.__cause__ = error
        return with_sqlstate(failure, error)

    def __repr__(self) -> str:
        return '<StandbyConnection %s, %s>' % (
            self.config.describe(), self.standby or
            ('primary' if self._raw is not None else 'not connected'))
