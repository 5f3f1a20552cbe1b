"""One in-process TCP proxy for the tests, the chaos soak and the benchmarks.

See ITCPProxy for what it does, and tcplinks for how a link forwards.
"""

from __future__ import annotations

import socket
import threading
from typing import Any, Callable, Dict, List, Optional, Set, Tuple, Union

from zope.interface import implementer

from canonical.testing.interfaces import ILinkOwner
from canonical.testing.interfaces import ITCPProxy
from canonical.testing.pgwire import ROUND_TRIP_KINDS
from canonical.testing.pgwire import Message
from canonical.testing.pgwire import query_text
from canonical.testing.tcplinks import Link
from canonical.testing.tcplinks import Trap
from canonical.testing.tcplinks import close_socket
from canonical.testing.waiting import wait_for

__all__ = ['TCPProxy', 'COMMIT_STATEMENTS']

# What a commit trap waits for: a one-phase COMMIT, PREPARE TRANSACTION
# and (by its first word) COMMIT PREPARED.
COMMIT_STATEMENTS = ('COMMIT', 'PREPARE TRANSACTION')


@implementer(ITCPProxy, ILinkOwner)
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
        self._links: Set[Link] = set()
        self._traps: List[Trap] = []
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
                    link = Link(self, client)
                    self._links.add(link)
                    self.accepted += 1
                self.changed.notify_all()
            if link is None:
                close_socket(client)
            else:
                link.thread.start()

    def _notify(self) -> None:
        with self.changed:
            self.changed.notify_all()

    def _forget(self, link: Link) -> None:
        with self.changed:
            self._links.discard(link)
            self.changed.notify_all()

    def _await_flowing(self, link: Link) -> bool:
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

    def _take_trap(self, message: Message) -> Optional[Trap]:
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
        trap = Trap(tuple(s.upper() for s in statements), bool(forward),
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
            if link.thread.ident is not None:  # started
                link.thread.join(5)
