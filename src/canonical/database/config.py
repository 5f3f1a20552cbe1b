"""Database settings: where the database is and how to reach it.

A DatabaseConfig is built from initZopeless() arguments, the environment
(LP_DBNAME, LP_DBHOST, LP_DBUSER, then libpq's own PG* variables and
defaults) or a ``<db:database>`` ZCML directive.  It validates everything
up front, so a malformed DSN fails when the script starts, not at the
first begin().  It never changes afterwards: replace() derives another
configuration, keeping every setting it is not told to change.
"""

from __future__ import annotations

import hashlib
import os
import re
from typing import Any, Dict, Mapping, Optional

import psycopg2.extensions
from zope.interface import implementer

from canonical.database.interfaces import ConfigurationError
from canonical.database.interfaces import IDatabaseConfig
from canonical.database.isolation import READ_COMMITTED_ISOLATION
from canonical.database.isolation import normalize_isolation

__all__ = ['DatabaseConfig']

# Keywords a script names with their own argument; a dbhost string that
# smuggles them in is refused instead of silently winning or losing.
_OWNED_KEYWORDS = {'dbname': 'dbname', 'user': 'dbuser',
                   'password': 'password'}

# How fast a silently vanished server (packets dropped, no reset) is given
# up.  tcp_user_timeout ends a connection whose data, or whose keepalive
# probe, the server has not acknowledged for 3 s; keepalives start after
# 2 s without traffic, so an idle connection is given up as fast as a busy
# one.  A healthy server acknowledges at once however long its query runs,
# so only a network stall of 3 s costs a connection.  connect_timeout is
# libpq's minimum (2 s); hosts.py keeps a host that timed out from costing
# it again while other hosts can be tried.  Measured on a primary that
# vanished from a network namespace, with its standby promoted at once:
# first commit on the new primary 3.5 s after the loss (4.4 s for a job
# idle 1 s between units), against 15.5 s with the former defaults
# (keepalives 5/2/3 s, tcp_user_timeout 15 s, connect_timeout 5 s).
#
# target_session_attrs=read-write: the library is for jobs that write, and
# a session that cannot write (a standby, a primary fenced with
# default_transaction_read_only, one demoted by a switchover) must never be
# kept.  libpq then skips such servers of a host list, and with servers of
# PostgreSQL 14 or later it decides from what the server reports at
# start-up, without a round trip.  "primary" would accept a fenced
# primary; "any" would connect to a standby.  Readers pass another value
# (any, read-only, standby, prefer-standby) explicitly.
_LIBPQ_DEFAULTS = {
    'target_session_attrs': 'read-write',
    'keepalives': '1',
    'keepalives_idle': '2',
    'keepalives_interval': '1',
    'keepalives_count': '2',
    'tcp_user_timeout': '3000',
    'connect_timeout': '2',
    'application_name': 'zopeless',
}


# The target_session_attrs of sessions that must be able to write.
_WRITER_ATTRS = ('read-write', 'primary')

# What a configuration does, as opposed to where it connects; replace()
# may change these.
_BEHAVIOUR_DEFAULTS: Dict[str, Any] = {
    'isolation': READ_COMMITTED_ISOLATION,
    'implicitBegin': True,
    'debug': False,
    'reconnect_timeout': None,
    'reconnect_initial_delay': 0.005,
    'reconnect_max_delay': 0.05,
    'resolve_commit_outcome': False,
    # Read units on standbys (see policy.py): Launchpad's default for the
    # lag above which a standby is left, and how long a read unit waits
    # for a standby to replay this process's last commit.
    'max_usable_lag': 120.0,
    'standby_catch_up_timeout': 1.0,
}


def _validated(settings: Dict[str, Any]) -> Dict[str, Any]:
    """``settings`` checked and normalised; ConfigurationError if not."""
    unknown = set(settings) - set(_BEHAVIOUR_DEFAULTS)
    if unknown:
        raise ConfigurationError('Unknown setting(s): %s.'
                                 % ', '.join(sorted(unknown)))
    out = dict(settings)
    out['isolation'] = normalize_isolation(out['isolation'])
    out['implicitBegin'] = bool(out['implicitBegin'])
    out['debug'] = bool(out['debug'])
    out['resolve_commit_outcome'] = bool(out['resolve_commit_outcome'])
    timeout = out['reconnect_timeout']
    if timeout is not None:
        if timeout < 0:
            raise ConfigurationError(
                'reconnect_timeout must be >= 0 or None')
        out['reconnect_timeout'] = float(timeout)
    initial = float(out['reconnect_initial_delay'])
    cap = float(out['reconnect_max_delay'])
    if not 0 < initial <= cap:
        raise ConfigurationError(
            'Need 0 < reconnect_initial_delay <= reconnect_max_delay.')
    out['reconnect_initial_delay'], out['reconnect_max_delay'] = initial, cap
    for name in ('max_usable_lag', 'standby_catch_up_timeout'):
        out[name] = float(out[name])
        if out[name] < 0:
            raise ConfigurationError('%s must be >= 0 (seconds).' % name)
    return out


def _may_hold_secret(dsn: str) -> bool:
    return 'password' in dsn.lower() or ('://' in dsn and '@' in dsn)


def _parse(dsn: str, what: str) -> dict[str, str]:
    try:
        return psycopg2.extensions.parse_dsn(dsn)
    except psycopg2.ProgrammingError as e:
        detail = str(e).strip().split(':', 1)[-1].strip()
        if _may_hold_secret(dsn):
            # libpq quotes the offending fragment, which may be a password.
            detail = re.sub(r'"[^"]*"', '"..."', detail)
        raise ConfigurationError(
            'Malformed %s: %s.  Use "key=value" pairs or a postgresql:// '
            'URI.' % (what, detail)) from None


def _host_params(dbhost: str) -> Dict[str, str]:
    """The libpq parameters of ``dbhost``: a host, then optionally more
    keywords (``'db1 port=5433'``)."""
    tokens = dbhost.split(None, 1)
    params = {'host': tokens[0]}
    if len(tokens) > 1:
        extra = _parse(tokens[1], 'dbhost')
        for key, argument in _OWNED_KEYWORDS.items():
            if key in extra:
                raise ConfigurationError(
                    'dbhost may not set %r; pass %s= to initZopeless '
                    'instead.' % (key, argument))
        params.update(extra)
    return params


class _Setting:
    """A behaviour setting, read as an attribute and never assigned.

    Each config also keeps its settings in its own ``__dict__``, which a
    descriptor without ``__set__`` lets attribute reads find first: the
    library reads some settings in every unit, and a plain attribute costs
    no call.  DatabaseConfig.__setattr__ refuses assignments."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, config: Any, owner: Optional[type] = None) -> Any:
        if config is None:
            return self
        return config._settings[self.name]


@implementer(IDatabaseConfig)
class DatabaseConfig:
    """Settings of one database; see IDatabaseConfig.

    Keyword ``settings`` are the behaviour settings: isolation,
    implicitBegin, debug, reconnect_timeout, reconnect_initial_delay,
    reconnect_max_delay, resolve_commit_outcome, max_usable_lag and
    standby_catch_up_timeout.
    """

    isolation = _Setting()
    implicitBegin = _Setting()
    debug = _Setting()
    reconnect_timeout = _Setting()
    reconnect_initial_delay = _Setting()
    reconnect_max_delay = _Setting()
    resolve_commit_outcome = _Setting()
    max_usable_lag = _Setting()
    standby_catch_up_timeout = _Setting()

    def __init__(self, dbname: Optional[str] = None,
                 dbhost: Optional[str] = None,
                 dbuser: Optional[str] = None,
                 dsn: Optional[str] = None,
                 password: Optional[str] = None,
                 libpq_options: Optional[Mapping[str, Any]] = None,
                 environ: Optional[Mapping[str, str]] = None,
                 **settings: Any) -> None:
        env = os.environ if environ is None else environ
        params: dict[str, str] = dict(_LIBPQ_DEFAULTS)
        if dsn:
            params.update(_parse(dsn, 'DSN'))
        if dbhost is None and not dsn:
            dbhost = env.get('LP_DBHOST')
        if dbhost:
            params.update(_host_params(dbhost))
        if dbname is None and 'dbname' not in params:
            # Unset: libpq decides (PGDATABASE, else the user's name).
            dbname = env.get('LP_DBNAME')
        if dbname:
            params['dbname'] = dbname
        if dbuser is None and 'user' not in params:
            dbuser = env.get('LP_DBUSER')
        if dbuser:
            params['user'] = dbuser
        if password is not None:
            params['password'] = password
        for key, value in (libpq_options or {}).items():
            params[key] = str(value)
        # Let libpq validate every keyword now rather than at first use.
        _parse(psycopg2.extensions.make_dsn(**params), 'connection settings')
        self._keep(params, _validated(dict(_BEHAVIOUR_DEFAULTS, **settings)))

    def _keep(self, params: dict, settings: dict) -> None:
        self.__dict__.update(settings, _params=params, _settings=settings)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(
            'A DatabaseConfig does not change; use replace(%s=...) to derive '
            'another one.' % name)

    def replace(self, **changes: Any) -> 'DatabaseConfig':
        clone = object.__new__(DatabaseConfig)
        clone._keep(self._params,
                    _validated(dict(self._settings, **changes)))
        return clone

    @property
    def writes(self) -> bool:
        return self._params.get('target_session_attrs') in _WRITER_ATTRS

    def connect_kwargs(self) -> dict[str, str]:
        return dict(self._params)

    def get(self, key: str, default: Optional[str] = None) -> Optional[str]:
        """One libpq parameter (never the password)."""
        if key == 'password':
            raise KeyError('the password is not readable')
        return self._params.get(key, default)

    def describe(self) -> str:
        env = os.environ
        parts = []
        for key, envname in (('host', 'PGHOST'), ('port', 'PGPORT'),
                             ('dbname', 'PGDATABASE'), ('user', 'PGUSER')):
            value = self._params.get(key) or env.get(envname)
            if value:
                parts.append('%s=%s' % (key, value))
        return ' '.join(parts) or 'the default libpq database'

    def database_key(self) -> tuple:
        # The password only as a digest: keys end up in dict reprs.
        return tuple(sorted(
            (k, hashlib.sha256(v.encode()).hexdigest() if k == 'password'
             else v) for k, v in self._params.items()))

    def settings_key(self) -> tuple:
        return (self.database_key(),
                tuple(sorted(self._settings.items())))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DatabaseConfig) and \
            self.settings_key() == other.settings_key()

    def __hash__(self) -> int:
        return hash(self.settings_key())

    def __repr__(self) -> str:
        return '<DatabaseConfig %s isolation=%s implicitBegin=%s>' % (
            self.describe(), self.isolation, self.implicitBegin)
