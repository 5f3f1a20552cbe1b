"""HAProxy in front of the Patroni members, as Patroni's own example runs it.

The configuration is that of Patroni's shipped ``haproxy.cfg`` (Debian:
/usr/share/doc/patroni/examples/haproxy.cfg): TCP mode, each member
checked through its Patroni REST API (``OPTIONS /primary`` answers 200 on
the leader only), ``inter 3s fall 3 rise 2``, and the sessions of a member
marked down cut (``on-marked-down shutdown-sessions``).  It listens on
loopback only.

``check='tcp'`` makes the check a plain TCP connect instead, as some users
configure it (often with ``balance first``): such an HAProxy cannot tell
a leader from a replica or from a demoted primary that still runs, which
is what a test of the library's own checks needs to put in front of it.
"""

import os
import socket
from typing import Optional, Sequence, Tuple

from .daemon import Daemon
from .etcd import find_program
from .interfaces import IHAProxy, implementer
from .layout import HOST, pick_port

__all__ = ['HAProxy', 'CHECKS']

# Patroni's example, word for word.
CHECKS = 'inter 3s fall 3 rise 2 on-marked-down shutdown-sessions'
# What each kind of check adds to the listen section.
_CHECK_LINES = {
    'patroni': ['    option httpchk OPTIONS /primary',
                '    http-check expect status 200'],
    'tcp': [],      # "check" alone: a TCP connect
}


@implementer(IHAProxy)
class HAProxy:
    """See IHAProxy."""

    host = HOST

    def __init__(self, directory: str,
                 members: Sequence[Tuple[str, str, int, int]],
                 user: Optional[dict] = None, checks: str = CHECKS,
                 check: str = 'patroni', balance: Optional[str] = None,
                 name: str = 'haproxy') -> None:
        if check not in _CHECK_LINES:
            raise ValueError('unknown HAProxy check %r' % check)
        self.directory = directory
        self.check = check
        self.port = pick_port()
        self.config = os.path.join(directory, name + '.cfg')
        lines = ['global', '    maxconn 1000', '',
                 'defaults', '    mode tcp', '    retries 2',
                 '    timeout client 30m', '    timeout connect 4s',
                 '    timeout server 30m', '    timeout check 5s', '',
                 'listen primary',
                 '    bind %s:%d' % (HOST, self.port)]
        lines += _CHECK_LINES[check]
        if balance:
            lines.append('    balance %s' % balance)
        lines.append('    default-server %s' % checks)
        for member, address, port, api_port in members:
            lines.append('    server %s %s:%d maxconn 500 check%s' % (
                member, address, port,
                ' port %d' % api_port if check == 'patroni' else ''))
        with open(self.config, 'w') as f:
            f.write('\n'.join(lines) + '\n')
        self.daemon = Daemon(name, [
            find_program('haproxy', 'haproxy'), '-db', '-f', self.config],
            directory, user)

    def __repr__(self) -> str:
        return '<HAProxy %s:%s>' % (self.host, self.port)

    def _listening(self) -> bool:
        try:
            socket.create_connection((HOST, self.port), 1).close()
        except OSError:
            return False
        return True

    def start(self) -> 'HAProxy':
        self.daemon.start(self._listening)
        return self

    def stop(self) -> None:
        self.daemon.stop()

    def is_running(self) -> bool:
        return self.daemon.pid is not None
