"""Parsing one syslog message (RFC 5424, RFC 3164 and the variants network devices send).

Only what the receiver needs: the HOSTNAME field (when there is one) and the text after it, where
the configuration-change patterns are looked for. A message without a valid ``<PRI>`` is malformed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_PRI = re.compile(rb"<(\d{1,3})>")
# RFC 5424: <PRI>VERSION SP TIMESTAMP SP HOSTNAME SP APP-NAME SP PROCID SP MSGID SP SD [SP MSG]
_RFC5424 = re.compile(r"(?P<version>[1-9]\d?) (?P<timestamp>\S+) (?P<hostname>\S+) (?P<rest>.*)", re.S)
# RFC 3164 timestamps ("Dec  1 11:30:00", Cisco adds "*", milliseconds, a year or a zone) and RFC 3339.
_BSD_TIME = re.compile(
    r"[*.]?(?:[A-Z][a-z]{2} +\d{1,2} (?:\d{4} )?\d\d:\d\d:\d\d(?:\.\d+)?(?: [A-Z]{2,5})?"
    r"|\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)?):? "
)
_CISCO_SEQUENCE = re.compile(r"\d+: ")  # "<189>52: ..." with `service sequence-numbers`
_HOSTNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,253}")


@dataclass(frozen=True)
class SyslogMessage:
    priority: int
    hostname: str | None  # None when the sender did not name itself (Cisco's default)
    text: str  # everything after the header fields that were recognized


class MalformedMessage(ValueError):
    pass


def parse(data: bytes) -> SyslogMessage:
    """One message (without its framing). Raises MalformedMessage."""
    pri = _PRI.match(data)
    if pri is None:
        raise MalformedMessage("no <PRI> at the start")
    priority = int(pri.group(1))
    if priority > 191:
        raise MalformedMessage(f"priority {priority} is out of range")
    body = data[pri.end():]
    if b"\x00" in body:
        raise MalformedMessage("NUL byte in the message")
    line = body.decode("utf-8", errors="replace").lstrip("\ufeff")
    if not line.strip():
        raise MalformedMessage("empty message")
    structured = _RFC5424.fullmatch(line)
    if structured is not None:
        return SyslogMessage(priority, _nil(structured.group("hostname")), structured.group("rest"))
    return _parse_bsd(priority, line)


def _parse_bsd(priority: int, line: str) -> SyslogMessage:
    rest = line
    sequence = _CISCO_SEQUENCE.match(rest)
    if sequence is not None:
        rest = rest[sequence.end():]
    stamp = _BSD_TIME.match(rest)
    if stamp is not None:
        rest = rest[stamp.end():]
        # TIMESTAMP HOSTNAME TAG: a TAG ends with ":" or carries "[pid]", a HOSTNAME does neither.
        token, _, after = rest.partition(" ")
        if after and _HOSTNAME.fullmatch(token) and not token.endswith(":"):
            return SyslogMessage(priority, token, after)
        return SyslogMessage(priority, None, rest)
    # Cisco with `logging origin-id hostname`: "<189>52: core-sw1: *Dec  1 ...: %SYS-5-..."
    token, sep, after = rest.partition(": ")
    if sep and _HOSTNAME.fullmatch(token) and _BSD_TIME.match(after):
        return SyslogMessage(priority, token, after[_BSD_TIME.match(after).end():])
    return SyslogMessage(priority, None, rest)


def _nil(value: str) -> str | None:
    return None if value == "-" else value
