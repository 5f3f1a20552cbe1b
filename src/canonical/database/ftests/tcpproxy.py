"""One in-process TCP proxy for the tests, the chaos soak and the benchmarks.

See ITCPProxy for what it does.  Each link (a client connection and its
upstream connection) has one thread per direction reading; what it reads
goes out through an ``_Outbound`` queue, so a delay adds latency to each
chunk without holding up the chunks behind it.  Without a delay the
reading thread sends itself, and the proxy costs one hop.
"""

from __future__ import annotations

import collections
import socket
import struct
import threading
import time
from typing import Any, Callable, Deque, Dict, List, NamedTuple, Optional
from typing import Set, Tuple, Union

from zope.interface import implementer

from canonical.database.ftests.interfaces import ITCPProxy
from canonical.database.ftests.pgwire import ENCRYPTION_REQUEST
from canonical.database.ftests.pgwire import ROUND_TRIP_KINDS
from canonical.database.ftests.pgwire import ClientStream
from canonical.database.ftests.pgwire import Message
from canonical.database.ftests.pgwire import query_text
from canonical.database.ftests.waiting import wait_for

__all__ = ['TCPProxy', 'COMMIT_STATEMENTS']

_CHUNK = 65536
_CONNECT_TIMEOUT = 5.0
# A forwarded trapped statement: its server side closes once the server
# answered (so it surely acted on it), or after this long.
_ANSWER_TIMEOUT = 5.0
_NO_ENCRYPTION = b'N'
# What a commit trap waits for: a one-phase COMMIT, PREPARE TRANSACTION
# and (by its first word) COMMIT PREPARED.
COMMIT_STATEMENTS = ('COMMIT', 'PREPARE TRANSACTION')


def _close(sock: socket.socket, hard: bool = False) -> None:
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


class _Trap(NamedTuple):
    statements: Tuple[str, ...]
    forward: bool
    then_refuse: bool


class _Outbound:
    """Chunks on their way to one socket, each sent ``delay`` seconds after
    it was read.  Order is kept: once anything waits in the queue, later
    chunks queue behind it even without a delay."""

    def __init__(self, link: '_Link', sock: socket.socket) -> None:
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


class _Link:
    """One client connection and its upstream connection."""

    def __init__(self, proxy: 'TCPProxy', client: socket.socket) -> None:
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
                        return
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

    def _spring(self, data: bytes, trap: _Trap) -> None:
        # Counted first: whoever sees the link die sees the count.
        self.proxy._sprang()
        if trap.then_refuse:
            self.proxy.refuse()
        if trap.forward:
            # The server gets the statement; the client loses its link and
            # never sees the answer, which ends the server side.
            self.hold_replies = True
            self.to_server.send(data, self.proxy.delay_up)
            _close(self.client)
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
            _close(sock, hard)
        for queue in outbound:
            queue.wake()
        if self._answer_timer is not None:
            self._answer_timer.cancel()
        self.proxy._notify()
        return True


@implementer(ITCPProxy)
class TCPProxy:
    """Forwards host:port (a free port of 127.0.0.1) to upstream_host:
    upstream_port; see ITCPProxy."""

    def __init__(self, upstream_host: str, upstream_port: int,
                 host: str = '127.0.0.1') -> None:
        self.upstream = (upstream_host, int(upstream_port))
        self.changed = threading.Condition()
        self.accepted = self.refused = self.cuts = self.sprung = 0
        self.delay_up = self.delay_down = 0.0
        self.stalled = self.refusing = self.closed = False
        self.messages: Dict[str, int] = {}
        self.statements: List[str] = []
        self._links: Set[_Link] = set()
        self._traps: List[_Trap] = []
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((host, 0))
        self._listener.listen(128)
        self.host, self.port = self._listener.getsockname()
        self._acceptor = threading.Thread(target=self._accept,
                                          name='tcpproxy', daemon=True)
        self._acceptor.start()

    def __enter__(self) -> 'TCPProxy':
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return '<TCPProxy %s:%d -> %s:%d>' % (
            (self.host, self.port) + self.upstream)

    # -- the links ----------------------------------------------------------

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                with self.changed:  # out of descriptors, say: try again
                    self.changed.wait_for(lambda: self.closed, 0.05)
                continue
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            link = None
            with self.changed:
                if self.refusing or self.closed:
                    self.refused += 1
                else:
                    link = _Link(self, client)
                    self._links.add(link)
                    self.accepted += 1
                self.changed.notify_all()
            if link is None:
                _close(client)
            else:
                link.thread.start()

    def _notify(self) -> None:
        with self.changed:
            self.changed.notify_all()

    def _forget(self, link: _Link) -> None:
        with self.changed:
            self._links.discard(link)
            self.changed.notify_all()

    def _await_flowing(self, link: _Link) -> bool:
        """Block while stalled; False when the link died meanwhile."""
        if self.stalled:
            with self.changed:
                self.changed.wait_for(lambda: not self.stalled or
                                      link.dead.is_set() or self.closed)
        return not (link.dead.is_set() or self.closed)

    def _count(self, messages: List[Message]) -> None:
        if not messages:
            return
        with self.changed:
            for message in messages:
                kind = message.kind
                self.messages[kind] = self.messages.get(kind, 0) + 1
                if kind == 'Q':
                    words = query_text(message).split(None, 1)
                    self.statements.append(words[0].upper() if words
                                           else '')
            self.changed.notify_all()

    def _take_trap(self, message: Message) -> Optional[_Trap]:
        if message.kind != 'Q' or not self._traps:
            return None
        text = query_text(message).lstrip().upper()
        with self.changed:
            for i, trap in enumerate(self._traps):
                if text.startswith(trap.statements):
                    return self._traps.pop(i)
        return None

    def _sprang(self) -> None:
        with self.changed:
            self.sprung += 1
            self.changed.notify_all()

    def _set(self, **settings: Any) -> None:
        with self.changed:
            for name, value in settings.items():
                setattr(self, name, value)
            self.changed.notify_all()

    def _cut_links(self, hard: bool) -> int:
        with self.changed:
            links = list(self._links)
        return sum(1 for link in links if link.cut(hard))

    # -- figures ------------------------------------------------------------

    @property
    def open_links(self) -> int:
        with self.changed:
            return len(self._links)

    @property
    def round_trips(self) -> int:
        with self.changed:
            return sum(self.messages.get(k, 0) for k in ROUND_TRIP_KINDS)

    def reset_counts(self) -> None:
        with self.changed:
            self.messages = {}
            self.statements = []

    def snapshot(self) -> Dict[str, Any]:
        with self.changed:
            return dict(
                accepted=self.accepted, refused=self.refused,
                cuts=self.cuts, sprung=self.sprung,
                open_links=len(self._links), messages=dict(self.messages),
                statements=list(self.statements),
                round_trips=sum(self.messages.get(k, 0)
                                for k in ROUND_TRIP_KINDS))

    def wait(self, predicate: Callable[['TCPProxy'], Any],
             timeout: float = 10.0, what: str = 'the proxy') -> Any:
        return wait_for(lambda: predicate(self), timeout, what,
                        condition=self.changed)

    # -- controls -----------------------------------------------------------

    def cut(self, hard: bool = False) -> int:
        count = self._cut_links(hard)
        with self.changed:
            self.cuts += count
            self.changed.notify_all()
        return count

    def refuse(self) -> None:
        self._set(refusing=True)

    def admit(self) -> None:
        self._set(refusing=False)

    def stall(self) -> None:
        self._set(stalled=True)

    def resume(self) -> None:
        self._set(stalled=False)

    def set_delay(self, down: float = 0.0, up: float = 0.0) -> None:
        self._set(delay_down=max(0.0, float(down)),
                  delay_up=max(0.0, float(up)))

    def trap(self,
             statements: Union[str, Tuple[str, ...]] = COMMIT_STATEMENTS,
             forward: bool = True, then_refuse: bool = False) -> None:
        if isinstance(statements, str):
            statements = (statements,)
        trap = _Trap(tuple(s.upper() for s in statements), bool(forward),
                     bool(then_refuse))
        with self.changed:
            self._traps.append(trap)
            self.changed.notify_all()

    def disarm(self) -> int:
        with self.changed:
            left, self._traps = len(self._traps), []
            self.changed.notify_all()
        return left

    def close(self) -> None:
        self._set(closed=True, stalled=False)
        try:
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes accept()
        except OSError:
            pass
        self._listener.close()
        self._acceptor.join(5)
        with self.changed:
            links = list(self._links)
        for link in links:
            link.cut()
            link.thread.join(5)
