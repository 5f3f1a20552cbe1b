"""A test host of its own: a network namespace reached over a veth pair.

A server started inside (see ``Cluster(netns=...)``) listens on the
namespace's address, so that tests can take it off the network the way a
dead machine or a partition does, which a server on loopback cannot
simulate:

* silent: the namespace's address is removed while this side keeps a
  permanent neighbour entry for it, so packets still leave, arrive and are
  dropped there: no reset, no ICMP error, no ARP failure; connections just
  stop answering;
* loud: an ``unreachable`` route refuses new connections at once and the
  established ones are reset (``ss -K``).

Each namespace takes a /30 of 10.213.0.0/16 that no interface or route of
the machine uses; names carry our pid, so a later run can remove what a
killed run left behind.  Root and the ``ip`` and ``ss`` commands
(iproute2) are needed.
"""

import contextlib
import fcntl
import ipaddress
import itertools
import os
import random
import re
import shutil
import signal
import subprocess
import time
from typing import List, Optional, Sequence

from canonical.database.processes import pid_alive

from .interfaces import INetworkHost, NetworkHostError, implementer

__all__ = ['NetworkHost', 'netns_command']

POOL = ipaddress.ip_network('10.213.0.0/16')
PREFIX = 'zopeless-'
_LOCK = '/tmp/zopeless-netns.lock'
_counter = itertools.count(1)


def _ip(*args: str, netns: Optional[str] = None,
        check: bool = True) -> subprocess.CompletedProcess:
    argv = ['ip'] + list(args)
    if netns is not None:
        argv = ['ip', 'netns', 'exec', netns] + argv
    try:
        result = subprocess.run(argv, capture_output=True, text=True,
                                timeout=30)
    except (OSError, subprocess.SubprocessError) as e:
        raise NetworkHostError('%s failed: %s' % (' '.join(argv), e))
    if check and result.returncode != 0:
        raise NetworkHostError('%s failed: %s' % (
            ' '.join(argv), (result.stderr or result.stdout).strip()))
    return result


def netns_command(name: str, argv: Sequence[str], uid: Optional[int] = None,
                  gid: Optional[int] = None) -> List[str]:
    """argv run inside namespace ``name``, as uid/gid when given."""
    nsenter = shutil.which('nsenter') or '/usr/bin/nsenter'
    prefix = [nsenter, '--net=/run/netns/%s' % name]
    if uid is not None:
        prefix += ['--setgid', str(gid), '--setuid', str(uid)]
    return prefix + ['--'] + list(argv)


def _used_networks() -> List[ipaddress.IPv4Network]:
    """Every IPv4 network an address or route of this machine covers."""
    text = _ip('-o', '-4', 'addr', 'show').stdout + \
        _ip('-4', 'route', 'show', 'table', 'all').stdout
    found = []
    for cidr in re.findall(r'(\d+\.\d+\.\d+\.\d+(?:/\d+)?)', text):
        with contextlib.suppress(ValueError):
            found.append(ipaddress.ip_network(cidr, strict=False))
    return found


def _pick_network() -> ipaddress.IPv4Network:
    used = [n for n in _used_networks() if n.prefixlen > 0]
    subnets = list(POOL.subnets(new_prefix=30))
    rng = random.Random()
    for _ in range(200):
        candidate = rng.choice(subnets)
        if not any(candidate.overlaps(n) for n in used):
            return candidate
    raise NetworkHostError('no free /30 left in %s' % POOL)


def _kill_inside(name: str) -> None:
    result = _ip('netns', 'pids', name, check=False)
    for pid in result.stdout.split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)


def _delete(name: str, host_link: str) -> None:
    _kill_inside(name)
    _ip('netns', 'delete', name, check=False)
    _ip('link', 'delete', host_link, check=False)
    # The kernel tears a namespace's devices down asynchronously; wait,
    # so that the next run finds the names and addresses free.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if _ip('link', 'show', host_link, check=False).returncode != 0:
            return
        time.sleep(0.02)


def remove_leftovers() -> List[str]:
    """Remove the namespaces of our processes that died; their names."""
    removed = []
    listing = _ip('netns', 'list', check=False).stdout
    for name in re.findall(r'^(%s\d+-\d+)' % re.escape(PREFIX), listing,
                           re.M):
        pid, n = name[len(PREFIX):].split('-')
        if not pid_alive(int(pid)):
            _delete(name, 'zl%sh%s' % (pid, n))
            removed.append(name)
    return removed


@implementer(INetworkHost)
class NetworkHost:
    """See INetworkHost."""

    def __init__(self) -> None:
        n = next(_counter)
        self.name = '%s%d-%d' % (PREFIX, os.getpid(), n)
        # Interface names are limited to 15 characters.
        self._host_link = 'zl%dh%d' % (os.getpid(), n)
        self._ns_link = 'zl%dn%d' % (os.getpid(), n)
        self.network: Optional[str] = None
        self.address: Optional[str] = None
        self.gateway: Optional[str] = None
        self.is_cut: Optional[str] = None
        self._prefix = 30
        self._created = False
        self._peers = False

    def __repr__(self) -> str:
        return '<NetworkHost %s %s>' % (self.name, self.address)

    def create(self) -> 'NetworkHost':
        if self._created:
            return self
        if os.geteuid() != 0:
            raise NetworkHostError('network namespaces need root')
        if shutil.which('ip') is None:
            raise NetworkHostError('the ip command (iproute2) is missing')
        fd = os.open(_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            # Choosing a free network and taking it is one step.
            fcntl.flock(fd, fcntl.LOCK_EX)
            remove_leftovers()
            net = _pick_network()
            self._created = True
            try:
                self._build(net)
            except BaseException:
                self.remove()
                raise
        finally:
            os.close(fd)
        return self

    def _build(self, net: ipaddress.IPv4Network) -> None:
        gateway, address = list(net.hosts())
        self.network = str(net)
        self.gateway, self.address = str(gateway), str(address)
        _ip('netns', 'add', self.name)
        _ip('link', 'add', self._host_link, 'type', 'veth', 'peer', 'name',
            self._ns_link)
        _ip('link', 'set', self._ns_link, 'netns', self.name)
        _ip('addr', 'add', '%s/%d' % (self.gateway, self._prefix), 'dev',
            self._host_link)
        _ip('link', 'set', self._host_link, 'up')
        self._add_address()
        _ip('link', 'set', self._ns_link, 'up', netns=self.name)
        _ip('link', 'set', 'lo', 'up', netns=self.name)
        mac = _ip('-o', 'link', 'show', self._ns_link,
                  netns=self.name).stdout
        found = re.search(r'link/ether ([0-9a-f:]{17})', mac)
        if not found:
            raise NetworkHostError('no MAC address on %s' % self._ns_link)
        # Permanent: a silent cut must not turn into a failed ARP lookup,
        # which the client would be told about (no route to host).
        _ip('neigh', 'replace', self.address, 'lladdr', found.group(1),
            'dev', self._host_link, 'nud', 'permanent')

    def _add_address(self) -> None:
        _ip('addr', 'add', '%s/%d' % (self.address, self._prefix), 'dev',
            self._ns_link, netns=self.name)
        if self._peers:
            _ip('route', 'replace', str(POOL), 'via', self.gateway,
                netns=self.name)

    def join_peers(self) -> None:
        # Forwarding is switched on for this veth's host end only: IPv4
        # asks the interface a packet came in on, so the machine's own
        # interfaces keep not forwarding.
        with open('/proc/sys/net/ipv4/conf/%s/forwarding'
                  % self._host_link, 'w') as f:
            f.write('1\n')
        self._peers = True
        if not self.is_cut:
            _ip('route', 'replace', str(POOL), 'via', self.gateway,
                netns=self.name)

    def command(self, argv: Sequence[str], uid: Optional[int] = None,
                gid: Optional[int] = None) -> List[str]:
        return netns_command(self.name, argv, uid, gid)

    def cut(self, silent: bool = True) -> None:
        if self.is_cut:
            raise NetworkHostError('%s is already cut off' % self.name)
        if silent:
            _ip('addr', 'del', '%s/%d' % (self.address, self._prefix), 'dev',
                self._ns_link, netns=self.name)
            self.is_cut = 'silent'
            return
        _ip('route', 'add', 'unreachable', '%s/32' % self.address)
        self.is_cut = 'loud'
        # Established connections: reset our ends, which also sends the
        # other side a reset.
        subprocess.run(['ss', '-K', 'dst', self.address],
                       capture_output=True, timeout=30)

    def restore(self) -> None:
        if self.is_cut == 'silent':
            self._add_address()
        elif self.is_cut == 'loud':
            _ip('route', 'del', 'unreachable', '%s/32' % self.address)
        self.is_cut = None

    def remove(self) -> None:
        if not self._created:
            return
        if self.is_cut == 'loud':
            _ip('route', 'del', 'unreachable', '%s/32' % self.address,
                check=False)
        _delete(self.name, self._host_link)
        self._created = False
        self.is_cut = None
