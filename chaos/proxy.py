"""An in-process TCP proxy between the library and PostgreSQL, under the
chaos driver's control.

Each client connection gets its own upstream connection and two pump
threads.  The driver can

* ``cut()`` every open link, both directions at once (FIN, or RST with
  ``hard=True``);
* ``stall()`` the proxy: nothing is forwarded and new connections are held
  without an upstream (a black hole), until ``resume()``;
* ``set_delay(seconds)``: every chunk the server sends is held back that
  long (slow responses);
* ``arm_commit_trap(forward)``: the next link that sends COMMIT (or
  PREPARE TRANSACTION, or COMMIT PREPARED) is cut with the statement in
  flight: forwarded to the server with its reply withheld
  (``forward=True``: the outcome is unknown to the client), or dropped.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from typing import Optional, Set

__all__ = ['ChaosProxy']

_CHUNK = 65536
_TRAPPED = (b'COMMIT', b'PREPARE TRANSACTION')
_POLL = 0.1


class _Link:
    """One client connection and its upstream connection."""

    def __init__(self, proxy: 'ChaosProxy', client: socket.socket) -> None:
        self.proxy = proxy
        self.client = client
        self.server: Optional[socket.socket] = None
        self.dead = threading.Event()
        self.hold_replies = False
        self._lock = threading.Lock()

    def run(self) -> None:
        proxy = self.proxy
        try:
            # A stalled proxy accepts but does not answer: a black hole.
            while not proxy._flowing.wait(_POLL):
                if self.dead.is_set() or proxy.closed:
                    return
            if self.dead.is_set():
                return
            try:
                server = socket.create_connection(proxy.upstream, timeout=5)
            except OSError:
                return  # the server is down: the client sees a closed link
            server.settimeout(None)
            server.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                if self.dead.is_set():
                    server.close()
                    return
                self.server = server
            down = threading.Thread(target=self._pump,
                                    args=(server, self.client, True),
                                    name='chaos-proxy-down', daemon=True)
            down.start()
            self._pump(self.client, server, False)
            down.join()
        finally:
            self.cut()
            proxy._forget(self)

    def _pump(self, src: socket.socket, dst: socket.socket,
              downstream: bool) -> None:
        proxy = self.proxy
        try:
            while not self.dead.is_set():
                data = src.recv(_CHUNK)
                if not data:
                    return
                while not proxy._flowing.wait(_POLL):
                    if self.dead.is_set():
                        return
                if downstream and proxy.delay:
                    time.sleep(proxy.delay)
                if not downstream and proxy._traps and any(
                        verb in data for verb in _TRAPPED):
                    forward = proxy._take_trap()
                    if forward is not None:
                        self._spring(dst, data, forward)
                        return
                if self.dead.is_set() or (downstream and self.hold_replies):
                    return
                dst.sendall(data)
        except OSError:
            return
        finally:
            self.cut()

    def _spring(self, server: socket.socket, data: bytes,
                forward: bool) -> None:
        self.hold_replies = True
        if forward:
            server.sendall(data)
            time.sleep(0.05)  # long enough for the server to act on it
        self.cut()
        self.proxy.sprung += 1

    def cut(self, hard: bool = False) -> bool:
        """Close both sides; True when the link was alive."""
        with self._lock:
            if self.dead.is_set():
                return False
            self.dead.set()
            sockets = [s for s in (self.client, self.server) if s is not None]
        for sock in sockets:
            try:
                if hard:
                    # close() then resets the connection (RST); SHUT_RD
                    # wakes the pump blocked in recv() without a FIN.
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                    struct.pack('ii', 1, 0))
                    sock.shutdown(socket.SHUT_RD)
                else:
                    sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                sock.close()
            except OSError:
                pass
        return True


class ChaosProxy:
    """Forwards 127.0.0.1:<port> to ``upstream`` (host, port)."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.delay = 0.0
        self.closed = False
        self.accepted = 0
        self.sprung = 0
        self._traps: list = []
        self._flowing = threading.Event()
        self._flowing.set()
        self._links: Set[_Link] = set()
        self._lock = threading.Lock()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(('127.0.0.1', 0))
        self._listener.listen(128)
        self._listener.settimeout(_POLL)
        self.port = self._listener.getsockname()[1]
        self._thread: Optional[threading.Thread] = None

    def start(self) -> 'ChaosProxy':
        self._thread = threading.Thread(target=self._accept_loop,
                                        name='chaos-proxy', daemon=True)
        self._thread.start()
        return self

    def _accept_loop(self) -> None:
        while not self.closed:
            try:
                client, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                if self.closed:
                    return
                time.sleep(_POLL)
                continue
            client.settimeout(None)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            link = _Link(self, client)
            with self._lock:
                self._links.add(link)
                self.accepted += 1
            threading.Thread(target=link.run, name='chaos-proxy-up',
                             daemon=True).start()

    def _forget(self, link: _Link) -> None:
        with self._lock:
            self._links.discard(link)

    @property
    def open_links(self) -> int:
        with self._lock:
            return len(self._links)

    # -- the driver's controls ---------------------------------------------

    def cut(self, hard: bool = False) -> int:
        """Cut every open link, both directions; returns how many."""
        with self._lock:
            links = list(self._links)
        return sum(1 for link in links if link.cut(hard))

    def stall(self) -> None:
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    @property
    def stalled(self) -> bool:
        return not self._flowing.is_set()

    def arm_commit_trap(self, forward: bool = True) -> None:
        with self._lock:
            self._traps.append(bool(forward))

    def disarm(self) -> int:
        """Remove the traps not sprung yet; returns how many."""
        with self._lock:
            left, self._traps = len(self._traps), []
        return left

    def _take_trap(self) -> Optional[bool]:
        with self._lock:
            return self._traps.pop(0) if self._traps else None

    def set_delay(self, seconds: float) -> None:
        self.delay = max(0.0, float(seconds))

    def close(self) -> None:
        self.closed = True
        self.resume()
        try:
            self._listener.close()
        except OSError:
            pass
        self.cut()
        if self._thread is not None:
            self._thread.join(5)
