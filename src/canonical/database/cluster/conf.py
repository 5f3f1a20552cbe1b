"""The configuration files the cluster writes into its data directory.

``postgresql.conf`` and ``pg_hba.conf`` are written once, after initdb;
``zopeless.conf``, included by the former, holds what may change from one
start to the next (port, fsync) so that it can be rewritten safely.
"""

from .layout import HOST

__all__ = ['APP_ROLE', 'PASSWORD_ROLE', 'PASSWORD_ROLE_PASSWORD',
           'START_CONF', 'server_settings', 'hba', 'start_settings']

APP_ROLE = 'launchpad'
# A role that must give a password, so that tests can exercise password
# authentication and check that the password never leaks into messages.
PASSWORD_ROLE = 'zopeless_pw'
PASSWORD_ROLE_PASSWORD = 'canary-secret-9'
START_CONF = 'zopeless.conf'


def _quote(value: str) -> str:
    return "'%s'" % value.replace("'", "''")


def server_settings(rundir: str, scram: bool) -> str:
    """The text appended to the postgresql.conf initdb wrote."""
    lines = [
        '',
        '# Settings of the private cluster (canonical.database.cluster)',
        'listen_addresses = %s' % _quote(HOST),
        'unix_socket_directories = %s' % _quote(rundir),
        'max_connections = 300',
        # Two-phase commit is what the transaction manager is about.
        'max_prepared_transactions = 100',
        # Errors are classified by their text.
        "lc_messages = 'C'",
        'logging_collector = off',
    ]
    if scram:
        lines.append("password_encryption = 'scram-sha-256'")
    lines.append('include_if_exists = %s' % _quote(START_CONF))
    return '\n'.join(lines) + '\n'


def hba(method: str) -> str:
    """pg_hba.conf: everyone is trusted but the password role."""
    return (
        '# Written by canonical.database.cluster\n'
        'local all all trust\n'
        'host all {pw} 127.0.0.1/32 {m}\n'
        'host all {pw} ::1/128 {m}\n'
        'host all all 127.0.0.1/32 trust\n'
        'host all all ::1/128 trust\n'
    ).format(pw=PASSWORD_ROLE, m=method)


def start_settings(port: int, fsync: bool) -> str:
    """The text of zopeless.conf."""
    return ('# Rewritten at each start by canonical.database.cluster\n'
            'port = %d\nfsync = %s\n' % (port, 'on' if fsync else 'off'))
