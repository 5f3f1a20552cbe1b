"""One etcd member: the distributed configuration store Patroni uses.

The operating system's ``etcd`` (Debian's ``etcd-server``; scripts/setup.sh
installs it) runs on loopback and on the gateway address of each network
namespace whose members must reach it, never on any other interface.  Its
data lives in its directory, so stop() and start() keep the cluster's
keys, as an etcd outage does.
"""

import os
import shutil
import urllib.request
from typing import List, Optional, Sequence

from .daemon import Daemon
from .interfaces import ClusterError, IEtcd, implementer
from .layout import HOST, pick_port

__all__ = ['Etcd', 'find_program']


def find_program(name: str, package: str) -> str:
    for found in (shutil.which(name), '/usr/bin/' + name,
                  '/usr/sbin/' + name):
        if found and os.access(found, os.X_OK):
            return found
    raise ClusterError('%s not found; install it (Debian 12: apt-get install '
                       '%s, or run scripts/setup.sh as root)'
                       % (name, package))


@implementer(IEtcd)
class Etcd:
    """See IEtcd."""

    def __init__(self, directory: str, addresses: Sequence[str] = (),
                 user: Optional[dict] = None) -> None:
        self.directory = directory
        self.addresses: List[str] = [HOST] + list(addresses)
        self.port = pick_port()
        self.peer_port = pick_port(avoid=(self.port,))
        peer = 'http://%s:%d' % (HOST, self.peer_port)
        self.daemon = Daemon('etcd', [
            find_program('etcd', 'etcd-server'), '--name', 'zl',
            '--data-dir', os.path.join(directory, 'etcd'),
            '--listen-client-urls', ','.join(
                'http://%s:%d' % (a, self.port) for a in self.addresses),
            '--advertise-client-urls', self.url,
            '--listen-peer-urls', peer,
            '--initial-advertise-peer-urls', peer,
            '--initial-cluster', 'zl=' + peer,
            '--initial-cluster-token', os.path.basename(directory)],
            directory, user, env={'ETCD_UNSUPPORTED_ARCH': ''})

    def __repr__(self) -> str:
        return '<Etcd %s>' % self.url

    @property
    def url(self) -> str:
        return 'http://%s:%d' % (HOST, self.port)

    def endpoint(self, address: str = HOST) -> str:
        """host:port of the client URL on ``address``."""
        return '%s:%d' % (address, self.port)

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + '/health', timeout=2) as r:
                return b'true' in r.read()
        except OSError:
            return False

    def start(self) -> 'Etcd':
        self.daemon.start(self.healthy)
        return self

    def stop(self) -> None:
        self.daemon.stop()

    def is_running(self) -> bool:
        return self.daemon.pid is not None
