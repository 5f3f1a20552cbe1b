"""The configuration files the cluster writes into its data directory.

``postgresql.conf`` and ``pg_hba.conf`` are written once, after initdb;
``zopeless.conf``, included by the former, holds what may change from one
start to the next (port, fsync) so that it can be rewritten safely.
"""

from typing import Any, Mapping, Optional, Sequence, Union

from .layout import HOST

__all__ = ['APP_ROLE', 'PASSWORD_ROLE', 'PASSWORD_ROLE_PASSWORD',
           'START_CONF', 'LOOPBACK_NETWORKS', 'server_settings', 'hba',
           'setting_line', 'start_settings']

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
        '# Settings of the private cluster (canonical.testing.cluster)',
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


LOOPBACK_NETWORKS = ('127.0.0.1/32', '::1/128')


def hba(method: str, networks: Sequence[str] = LOOPBACK_NETWORKS,
        replication: bool = False) -> str:
    """pg_hba.conf: everyone is trusted but the password role.

    ``networks`` are the client networks allowed over TCP (loopback, and
    the private networks of test namespaces); ``replication`` also lets
    standbys and pg_basebackup in, which a plain cluster does not need.
    """
    lines = ['# Written by canonical.testing.cluster', 'local all all trust']
    if replication:
        lines.append('local replication all trust')
    for net in networks:
        lines.append('host all %s %s %s' % (PASSWORD_ROLE, net, method))
        lines.append('host all all %s trust' % net)
        if replication:
            lines.append('host replication all %s trust' % net)
    return '\n'.join(lines) + '\n'


def setting_line(name: str, value: Union[str, int, float, bool]) -> str:
    """One postgresql.conf line, the value quoted as the server wants."""
    if isinstance(value, bool):
        value = 'on' if value else 'off'
    if isinstance(value, (int, float)):
        return '%s = %s' % (name, value)
    return '%s = %s' % (name, _quote(str(value)))


def start_settings(port: int, fsync: bool,
                   extra: Optional[Mapping[str, Any]] = None) -> str:
    """The text of zopeless.conf; ``extra`` holds a node's own settings
    (replication, listening address, fencing), empty for a plain cluster."""
    text = ('# Rewritten at each start by canonical.testing.cluster\n'
            'port = %d\nfsync = %s\n' % (port, 'on' if fsync else 'off'))
    for name in sorted(extra or ()):
        text += setting_line(name, extra[name]) + '\n'
    return text
