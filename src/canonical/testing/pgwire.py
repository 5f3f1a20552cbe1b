"""What a PostgreSQL client sends, split into protocol messages.

Only the client's side is parsed: enough for a test proxy to count round
trips, keep the first word of each statement, and recognise a statement
it was told to trap.  See "Message Flow" in the PostgreSQL documentation.
"""

from __future__ import annotations

from typing import List, NamedTuple

__all__ = ['Message', 'ClientStream', 'query_text',
           'ENCRYPTION_REQUEST', 'STARTUP', 'ROUND_TRIP_KINDS']

# Untyped packets that come before the startup message.
_CANCEL_CODE = 80877102
_ENCRYPTION_CODES = {80877103, 80877104}   # SSLRequest, GSSENCRequest

ENCRYPTION_REQUEST = 'encryption-request'
STARTUP = 'startup'
CANCEL = 'cancel'
# After these the client waits for the server: one round trip each.
ROUND_TRIP_KINDS = ('Q', 'S')   # simple Query; Sync of the extended protocol


class Message(NamedTuple):
    kind: str      # the type byte ('Q', 'P', 'S', ...) or one of the above
    body: bytes    # without type byte and length
    raw: bytes     # the message as sent


def query_text(message: Message) -> str:
    """The SQL of a Query message, without its terminating NUL."""
    return message.body.split(b'\0', 1)[0].decode('utf-8', 'replace')


class ClientStream:
    """Feed it what a client sends; it returns each complete message."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._started = False

    def feed(self, data: bytes) -> List[Message]:
        buf = self._buffer
        buf += data
        messages = []
        while True:
            if not self._started:
                if len(buf) < 8:
                    break
                size = max(8, int.from_bytes(buf[:4], 'big'))
                if len(buf) < size:
                    break
                code = int.from_bytes(buf[4:8], 'big')
                raw = bytes(buf[:size])
                if code in _ENCRYPTION_CODES:
                    kind = ENCRYPTION_REQUEST
                elif code == _CANCEL_CODE:
                    kind = CANCEL
                else:
                    kind, self._started = STARTUP, True
                messages.append(Message(kind, raw[8:], raw))
            else:
                if len(buf) < 5:
                    break
                size = max(4, int.from_bytes(buf[1:5], 'big'))
                if len(buf) < 1 + size:
                    break
                raw = bytes(buf[:1 + size])
                messages.append(Message(chr(raw[0]), raw[5:], raw))
            del buf[:len(raw)]
        return messages
