"""The links of the test proxy (see tcpproxy): one client connection and
its upstream connection each, with a thread per direction reading.

What a thread reads goes out through an ``_Outbound`` queue, so a delay
adds latency to each chunk without holding up the chunks behind it.
Without a delay the reading thread sends itself, and the proxy costs one
hop.
"""

from __future__ import annotations

import collections
import socket
import struct
import threading
import time
from typing import Deque, NamedTuple, Optional, Tuple

from canonical.testing.interfaces import ILinkOwner
from canonical.testing.pgwire import ENCRYPTION_REQUEST
from canonical.testing.pgwire import ClientStream

__all__ = ['Link', 'Trap', 'close_socket']

_CHUNK = 65536
_CONNECT_TIMEOUT = 5.0
# A forwarded trapped statement: its server side closes once the server
# answered (so it surely acted on it), or after this long.
_ANSWER_TIMEOUT = 5.0
_NO_ENCRYPTION = b'N'


def close_socket(sock: socket.socket, hard: bool = False) -> None:
    try:
        if hard:
            # close() then resets the connection (RST); SHUT_RD wakes a
            # thread blocked in recv() without sending a FIN.
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


class Trap(NamedTuple):
    statements: Tuple[str, ...]
    forward: bool
    then_refuse: bool


class _Outbound:
    """Chunks on their way to one socket, each sent ``delay`` seconds after
    it was read.  Order is kept: once anything waits in the queue, later
    chunks queue behind it even without a delay."""

    def __init__(self, link: 'Link', sock: socket.socket) -> None:
        self.link = link
        self.sock = sock
        self._cond = threading.Condition()
        self._queue: Deque[Tuple[float, bytes]] = collections.deque()
        self._sending = False
        self._writer: Optional[threading.Thread] = None

    def send(self, data: bytes, delay: float) -> None:
        with self._cond:
            direct = delay <= 0 and not self._queue and not self._sending
            if not direct:
                self._queue.append((time.monotonic() + delay, data))
                if self._writer is None:
                    self._writer = threading.Thread(
                        target=self._write, name='tcpproxy-delay',
                        daemon=True)
                    self._writer.start()
                self._cond.notify()
        if direct:
            self.sock.sendall(data)

    def _next(self) -> Optional[bytes]:
        with self._cond:
            while not self.link.dead.is_set():
                timeout = None
                if self._queue:
                    timeout = self._queue[0][0] - time.monotonic()
                    if timeout <= 0:
                        self._sending = True
                        return self._queue.popleft()[1]
                self._cond.wait(timeout)
        return None

    def _write(self) -> None:
        try:
            while True:
                data = self._next()
                if data is None or not self.link.proxy._await_flowing(
                        self.link):
                    return
                try:
                    self.sock.sendall(data)
                finally:
                    with self._cond:
                        self._sending = False
        except OSError:
            self.link.cut()

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def join(self, timeout: float) -> None:
        if self._writer is not None:
            self._writer.join(timeout)


class Link:
    """One client connection and its upstream connection."""

    def __init__(self, proxy: ILinkOwner, client: socket.socket) -> None:
        self.proxy = proxy
        self.client = client
        self.server: Optional[socket.socket] = None
        self.dead = threading.Event()
        self.hold_replies = False
        self._lock = threading.Lock()
        self._stream = ClientStream()
        self.to_client = _Outbound(self, client)
        self.to_server: Optional[_Outbound] = None
        self.thread = threading.Thread(target=self.run, name='tcpproxy-link',
                                       daemon=True)
        self._answer_timer: Optional[threading.Timer] = None

    def run(self) -> None:
        proxy = self.proxy
        try:
            # A stalled proxy accepts but does not answer: a black hole.
            if not proxy._await_flowing(self):
                return
            try:
                server = socket.create_connection(proxy.upstream,
                                                  timeout=_CONNECT_TIMEOUT)
            except OSError:
                return  # the server is down: the client sees a closed link
            server.settimeout(None)
            server.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                if self.dead.is_set():
                    server.close()
                    return
                self.server = server
                self.to_server = _Outbound(self, server)
            down = threading.Thread(target=self._pump_down,
                                    name='tcpproxy-down', daemon=True)
            down.start()
            self._pump_up()
            down.join()
        finally:
            self.cut()
            for queue in (self.to_client, self.to_server):
                if queue is not None:
                    queue.join(5)
            proxy._forget(self)

    def _pump_up(self) -> None:
        proxy = self.proxy
        try:
            while not self.dead.is_set():
                data = self.client.recv(_CHUNK)
                if not data or not proxy._await_flowing(self):
                    break
                messages = self._stream.feed(data)
                proxy._count(messages)
                out = []
                for message in messages:
                    if message.kind == ENCRYPTION_REQUEST:
                        self.client.sendall(_NO_ENCRYPTION)
                        continue
                    trap = proxy._take_trap(message)
                    if trap is not None:
                        self._spring(b''.join(out) + message.raw, trap)
                        return  # the server's side ends after its answer
                    out.append(message.raw)
                if out:
                    self.to_server.send(b''.join(out), proxy.delay_up)
        except OSError:
            pass
        self.cut()

    def _pump_down(self) -> None:
        proxy = self.proxy
        try:
            while not self.dead.is_set():
                data = self.server.recv(_CHUNK)
                if not data or self.hold_replies or \
                        not proxy._await_flowing(self):
                    break
                self.to_client.send(data, proxy.delay_down)
        except OSError:
            pass
        self.cut()

    def _spring(self, data: bytes, trap: Trap) -> None:
        # Counted first: whoever sees the link die sees the count.
        self.proxy._sprang()
        if trap.then_refuse:
            self.proxy.refuse()
        if trap.forward:
            # The server gets the statement; the client loses its link and
            # never sees the answer, which ends the server side.
            self.hold_replies = True
            self.to_server.send(data, self.proxy.delay_up)
            close_socket(self.client)
            self._answer_timer = threading.Timer(_ANSWER_TIMEOUT, self.cut)
            self._answer_timer.daemon = True
            self._answer_timer.start()
        else:
            self.cut()

    def cut(self, hard: bool = False) -> bool:
        """Close both sides; True when the link was alive."""
        with self._lock:
            if self.dead.is_set():
                return False
            self.dead.set()
            sockets = [s for s in (self.client, self.server) if s is not None]
            outbound = [o for o in (self.to_client, self.to_server) if o]
        for sock in sockets:
            close_socket(sock, hard)
        for queue in outbound:
            queue.wake()
        if self._answer_timer is not None:
            self._answer_timer.cancel()
        self.proxy._notify()
        return True
