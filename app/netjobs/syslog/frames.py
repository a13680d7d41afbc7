"""Splitting a TCP syslog stream into messages: newline framing and RFC 6587 octet counting.

A frame that starts with a digit is octet-counted (``LEN SP MSG``); anything else runs to the next
LF. Oversize messages are cut to ``max_bytes`` and the rest of them is skipped, so one sender can
never make the receiver buffer more than about ``max_bytes`` per connection.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_LENGTH_DIGITS = 9  # RFC 6587 puts no bound; 9 digits is far beyond any real message


@dataclass(frozen=True)
class Frame:
    data: bytes
    truncated: bool = False
    malformed: bool = False  # a broken length field, or a message cut off by the end of the stream


class StreamFramer:
    """Feed bytes in, get whole frames out."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._buffer = bytearray()
        self._skip = 0  # bytes of an oversize octet-counted message still to throw away
        self._skip_to_newline = False  # in the rest of an oversize or broken newline-framed line

    def feed(self, data: bytes) -> list[Frame]:
        self._buffer += data
        frames: list[Frame] = []
        while True:
            frame = self._next()
            if frame is None:
                return frames
            frames.append(frame)

    def close(self) -> list[Frame]:
        """The end of the stream: a last unterminated line counts, half an octet-counted one does not."""
        rest, self._buffer = bytes(self._buffer), bytearray()
        if self._skip or self._skip_to_newline or not rest.strip():
            return []
        if rest[:1].isdigit():
            return [Frame(rest[: self.max_bytes], malformed=True)]
        return [Frame(rest[: self.max_bytes].rstrip(b"\r\x00"), truncated=len(rest) > self.max_bytes)]

    def _next(self) -> Frame | None:
        buf = self._buffer
        if self._skip:
            dropped = min(self._skip, len(buf))
            del buf[:dropped]
            self._skip -= dropped
            if self._skip:
                return None
        if self._skip_to_newline:
            end = buf.find(b"\n")
            if end < 0:
                buf.clear()
                return None
            del buf[: end + 1]
            self._skip_to_newline = False
        while buf[:1] in (b"\n", b"\r", b"\x00"):  # blank lines between frames are no messages
            del buf[:1]
        if not buf:
            return None
        if buf[:1].isdigit():
            return self._octet_counted()
        return self._newline_framed()

    def _octet_counted(self) -> Frame | None:
        buf = self._buffer
        space = buf.find(b" ", 0, MAX_LENGTH_DIGITS + 1)
        if space < 0:
            if len(buf) <= MAX_LENGTH_DIGITS and buf.isdigit():
                return None  # the length field is still arriving
            self._skip_to_newline = True
            return Frame(bytes(buf[:MAX_LENGTH_DIGITS + 1]), malformed=True)
        if not buf[:space].isdigit():
            self._skip_to_newline = True
            return Frame(bytes(buf[:space]), malformed=True)
        length = int(buf[:space])
        start = space + 1
        if length > self.max_bytes:
            if len(buf) - start < self.max_bytes:
                return None
            frame = Frame(bytes(buf[start : start + self.max_bytes]), truncated=True)
            self._skip = length - self.max_bytes
            del buf[: start + self.max_bytes]
            return frame
        if len(buf) - start < length:
            return None
        frame = Frame(bytes(buf[start : start + length]).rstrip(b"\r\n\x00"))
        del buf[: start + length]
        return frame

    def _newline_framed(self) -> Frame | None:
        buf = self._buffer
        end = buf.find(b"\n", 0, self.max_bytes + 1)
        if end < 0:
            if len(buf) <= self.max_bytes:
                return None
            frame = Frame(bytes(buf[: self.max_bytes]), truncated=True)
            del buf[: self.max_bytes]
            self._skip_to_newline = True
            return frame
        frame = Frame(bytes(buf[:end]).rstrip(b"\r\x00"))
        del buf[: end + 1]
        return frame
