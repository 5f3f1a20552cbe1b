"""A TCP proxy that cuts the link at the moment a chosen statement passes.

Used to cut a connection while COMMIT is in flight: ``mode='after'``
forwards the statement to the server and then drops both sides before the
answer comes back (the server commits, the client cannot know);
``mode='before'`` drops the link without forwarding it (nothing commits).
"""

from __future__ import annotations

import socket
import threading
from typing import List, Optional

__all__ = ['CuttingProxy']


class CuttingProxy:
    """Forward 127.0.0.1:``port`` to ``dest``; see the module docstring."""

    def __init__(self, dest_host: str, dest_port: int) -> None:
        self.dest = (dest_host, dest_port)
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(('127.0.0.1', 0))
        self._listener.listen(16)
        self.port = self._listener.getsockname()[1]
        self.trigger: Optional[bytes] = None
        self.mode = 'after'
        self.cuts = 0
        self.refusing = False  # close new connections at once
        self._lock = threading.Lock()
        self._pairs: List[tuple] = []
        self._closed = False
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    def cut_on(self, statement: bytes, mode: str = 'after',
               then_refuse: bool = False) -> None:
        """Cut the next connection that sends ``statement``; with
        ``then_refuse``, refuse new connections from then on."""
        with self._lock:
            self.trigger, self.mode = statement, mode
            self.then_refuse = then_refuse

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.refusing:
                client.close()
                continue
            server = socket.create_connection(self.dest)
            with self._lock:
                self._pairs.append((client, server))
            threading.Thread(target=self._pump, args=(client, server, True),
                             daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False),
                             daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket,
              upstream: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                cut = False
                if upstream:
                    with self._lock:
                        if self.trigger and self.trigger in data:
                            cut, self.trigger = True, None
                            mode = self.mode
                if cut:
                    self.cuts += 1
                    if self.then_refuse:
                        self.refusing = True
                    if mode == 'after':
                        dst.sendall(data)
                    break
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def cut_all(self) -> None:
        """Drop every open link at once, as a dying server would."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            for sock in pair:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self._closed = True
        try:
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes accept()
        except OSError:
            pass
        self._listener.close()
        self._acceptor.join(5)
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            for sock in pair:
                try:
                    sock.close()
                except OSError:
                    pass
