"""Telling errors apart: dead link, permanent refusal, or retryable conflict.

psycopg2 gives a disconnection no SQLSTATE (``pgcode`` is None) but marks
the connection closed, so the connection's state is asked first and the
message only second.  Connection refusals carry no SQLSTATE either: libpq's
English messages (the embedded cluster runs with lc_messages=C) are all
there is.
"""

from __future__ import annotations

from typing import Iterator, Optional, TypeVar, Union

import psycopg2
from sqlobject import dberrors

__all__ = [
    'READ_ONLY_SQLSTATE',
    'connect_failure_kind',
    'is_disconnect',
    'is_read_only_error',
    'is_permanent_connect_error',
    'is_retryable_conflict',
    'error_chain',
    'server_message',
    'sqlstate',
    'translate_error',
    'with_sqlstate',
]

# read_only_sql_transaction: a write in a read-only transaction, which a
# standby or a primary fenced with default_transaction_read_only gives.
READ_ONLY_SQLSTATE = '25006'

# SQLSTATEs after which the server has closed (or will close) the session.
_FATAL_SESSION_CODES = {
    '57P01',  # admin_shutdown (pg_terminate_backend, smart/fast shutdown)
    '57P02',  # crash_shutdown
    '57P03',  # cannot_connect_now
    '25P03',  # idle_in_transaction_session_timeout
    '08000', '08003', '08006', '08001', '08004',
}

_DISCONNECT_MESSAGES = (
    'server closed the connection unexpectedly',
    'connection already closed',
    'terminating connection',
    'could not receive data from server',
    'could not send data to server',
    'no connection to the server',
    'connection not open',
    'ssl syscall error',
    'ssl connection has been closed unexpectedly',
    'connection timed out',
    'connection reset by peer',
    'broken pipe',
    'lost synchronization with server',
    'eof detected',
)

# Refusals that waiting cannot cure.  Anything else (refused, unreachable,
# starting up, shutting down, recovering, too many clients) is waited out.
_PERMANENT_CONNECT_MESSAGES = (
    'password authentication failed',
    'no password supplied',
    'authentication failed',
    'does not exist',             # role or database
    'no pg_hba.conf entry',
    'is not permitted to log in',
    'permission denied for database',
    'invalid connection option',
    'invalid dsn',
    'missing "=" after',
    'invalid sslmode value',
    'invalid port number',
    'invalid integer value',
    'unterminated quoted string',
    'server does not support ssl',
    'invalid value for parameter',
)

# Unknown hosts may be a typo (permanent) or a flaky resolver (transient).
_NAME_RESOLUTION_MESSAGES = ('could not translate host name',)

# What a failed connection attempt met, for the coordinator's figures.
_CONNECT_FAILURE_KINDS = (
    # libpq's target_session_attrs verdicts, and ours on a demoted primary,
    # first: with a host list they tell more than the other hosts' reasons.
    ('session is read-only', 'read_only'),
    ('server is in hot standby mode', 'read_only'),
    ('demoted primary', 'stale'),
    ('too many clients', 'too_many_clients'),
    ('connection slots are reserved', 'too_many_clients'),
    ('the database system is starting up', 'starting_up'),
    ('the database system is shutting down', 'shutting_down'),
    ('the database system is in recovery mode', 'recovering'),
    ('connection refused', 'refused'),
    ('timeout expired', 'timeout'),
    ('timed out', 'timeout'),
)

_RETRYABLE_CODES = {'40001', '40P01'}  # serialization failure, deadlock


def error_chain(error: Optional[BaseException]) -> Iterator[BaseException]:
    """``error`` and the exceptions it was raised from or during."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def sqlstate(error: BaseException) -> Optional[str]:
    """The SQLSTATE of ``error`` or of the error it came from, or None."""
    for item in error_chain(error):
        code = getattr(item, 'pgcode', None)
        if code:
            return code
    return None


E = TypeVar('E', bound=BaseException)


def with_sqlstate(error: E,
                  cause: Union[BaseException, str, None]) -> E:
    """``error`` carrying the SQLSTATE of ``cause`` (an exception, or the
    code itself) as ``pgcode``, so that callers see the server's code on
    whatever this library raises."""
    if isinstance(cause, str):
        code: Optional[str] = cause
    else:
        code = sqlstate(cause) if cause is not None else None
    if code and not getattr(error, 'pgcode', None):
        try:
            error.pgcode = code  # type: ignore[attr-defined]
        except AttributeError:
            pass  # psycopg2's own errors: they carry it already
    return error


def server_message(error: BaseException) -> str:
    """The driver's message of ``error`` on one line."""
    text = str(error)
    for item in error_chain(error):
        if isinstance(item, psycopg2.Error):
            text = item.pgerror or (item.args[0] if item.args else '')
            break
    return ' '.join(str(text).split())


def is_disconnect(error: BaseException, raw: object = None) -> bool:
    """True when ``error`` (raised by a statement on ``raw``) means the
    session is gone.  A cancelled statement (statement_timeout, 57014)
    leaves the session alive and is not a disconnection."""
    if raw is not None and getattr(raw, 'closed', 0):
        return True
    code = sqlstate(error)
    if code == '57014':
        return False
    if code in _FATAL_SESSION_CODES:
        return True
    text = ' '.join(str(item) for item in error_chain(error)).lower()
    return any(message in text for message in _DISCONNECT_MESSAGES)


def is_permanent_connect_error(error: BaseException,
                               ever_connected: bool = False) -> bool:
    """True when a failed connect will fail the same way next time."""
    if isinstance(error, psycopg2.ProgrammingError):
        return True  # malformed DSN
    text = str(error).lower()
    if 'the database system is' in text:
        return False  # starting up, shutting down, in recovery
    if any(message in text for message in _PERMANENT_CONNECT_MESSAGES):
        return True
    if any(message in text for message in _NAME_RESOLUTION_MESSAGES):
        return not ever_connected
    return False


def connect_failure_kind(error: BaseException) -> str:
    """What a failed connection attempt met, in one word: too_many_clients,
    starting_up, shutting_down, recovering, refused, timeout, read_only
    (not a writable primary), stale (a demoted primary) or other."""
    text = str(error).lower()
    for message, kind in _CONNECT_FAILURE_KINDS:
        if message in text:
            return kind
    return 'other'


def is_retryable_conflict(error: BaseException) -> bool:
    """Serialization failures and deadlocks: a new attempt may succeed."""
    return sqlstate(error) in _RETRYABLE_CODES


def is_read_only_error(error: BaseException) -> bool:
    """True for "cannot execute ... in a read-only transaction" (25006)."""
    return sqlstate(error) == READ_ONLY_SQLSTATE


def translate_error(error: psycopg2.Error) -> dberrors.Error:
    """The sqlobject.dberrors counterpart of a psycopg2 error, so commit
    errors are caught like statement errors; its ``pgcode`` is the
    server's SQLSTATE."""
    translated_class = dberrors.Error
    for cls in type(error).__mro__:
        translated = getattr(dberrors, cls.__name__, None)
        if isinstance(translated, type) and \
                issubclass(translated, dberrors.Error):
            translated_class = translated
            break
    return with_sqlstate(translated_class(server_message(error)), error)
