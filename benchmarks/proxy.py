"""A counting TCP proxy in front of PostgreSQL.

It forwards bytes unchanged and parses what clients send.  A round trip is
a message after which the client waits for the server: a simple-protocol
Query ('Q') or an extended-protocol Sync ('S').  The first word of every
Query is kept, so a transaction can be shown as, say, BEGIN SELECT COMMIT.
"""

import socket
import threading

# Untyped messages that precede the StartupMessage.
_PRE_STARTUP = {80877102, 80877103, 80877104}   # cancel, SSL, GSSENC
_ROUND_TRIP_TYPES = (b'Q', b'S')


def _shut_both(*socks):
    for sock in socks:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class CountingProxy:
    def __init__(self, upstream_host, upstream_port):
        self.upstream = (upstream_host, upstream_port)
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(('127.0.0.1', 0))
        self.listener.listen(128)
        self.host, self.port = self.listener.getsockname()
        self._lock = threading.Lock()
        self.reset()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True,
                         name='counting-proxy').start()

    def reset(self):
        with self._lock:
            self.types = {}
            self.statements = []
            self.connections = 0

    def snapshot(self):
        with self._lock:
            return dict(self.types), list(self.statements), self.connections

    def round_trips(self):
        types, _, _ = self.snapshot()
        return sum(types.get(t, 0) for t in _ROUND_TRIP_TYPES)

    def close(self):
        self._closed = True
        self.listener.close()

    def _accept(self):
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            with self._lock:
                self.connections += 1
            for s in (client, server):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._client_to_server,
                             args=(client, server), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client),
                             daemon=True).start()

    @staticmethod
    def _pipe(src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            _shut_both(src, dst)

    def _record(self, kind, body):
        with self._lock:
            self.types[kind] = self.types.get(kind, 0) + 1
            if kind == b'Q':
                text = body.split(b'\0', 1)[0].decode('utf-8', 'replace')
                words = text.split(None, 1)
                self.statements.append(words[0].upper() if words else '')

    def _client_to_server(self, src, dst):
        buf = b''
        started = False
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                buf += data
                while True:
                    if not started:
                        if len(buf) < 8:
                            break
                        size = int.from_bytes(buf[:4], 'big')
                        if len(buf) < size:
                            break
                        code = int.from_bytes(buf[4:8], 'big')
                        buf = buf[size:]
                        if code not in _PRE_STARTUP:
                            started = True
                        continue
                    if len(buf) < 5:
                        break
                    size = int.from_bytes(buf[1:5], 'big')
                    if len(buf) < 1 + size:
                        break
                    self._record(buf[:1], buf[5:1 + size])
                    buf = buf[1 + size:]
                # Counted before forwarding: no reply can overtake a count.
                dst.sendall(data)
        except OSError:
            pass
        finally:
            _shut_both(src, dst)
