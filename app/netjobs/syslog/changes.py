"""Which messages say a device's configuration changed, and who changed it.

==============  ==========================================================================
cisco_ios       ``%SYS-5-CONFIG_I: Configured from console by alice on vty0 (10.0.0.5)``
arista_eos      ``%SYS-5-CONFIG_E: Enter configuration mode from console by admin on vty3 (10.1.1.1)``
                ``%SYS-5-CONFIG_I: Configured from console by admin on vty3 (10.1.1.1)``
juniper_junos   ``UI_COMMIT: User 'bob' requested 'commit' operation (comment: none)``
                ``UI_COMMIT_COMPLETED: commit complete`` (no user: the burst's UI_COMMIT names them)
linux           ``NETJOBS_SYSLOG_LINUX_PATTERN``, a regular expression with a ``user`` group;
                off unless set (Linux has no one message that means "the configuration changed")
==============  ==========================================================================

IOS and EOS name a user only after AAA login ("by alice on vty0"); "by vty0 (10.0.0.5)" or
"by console" names a line, not a person, and gives no user. The patterns are searched anywhere in
the text after the header, so RFC 3164, RFC 5424 and Cisco's own prefixes all match.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# "Configured from console by alice on vty0 (10.0.0.5)" / "Enter configuration mode from ... by ..."
_IOS_EOS = re.compile(
    r"%SYS-\d-CONFIG_(?P<kind>[IE]): (?:Configured|Enter configuration mode) from (?P<source>\S+) "
    r"by (?P<who>\S+)(?P<on> on (?P<line>\S+))?"
)
_JUNOS_COMMIT = re.compile(r"\bUI_COMMIT\b(?!_).*?\bUser '(?P<user>[^']*)' requested '(?P<operation>[^']*)'")
_JUNOS_COMMIT_COMPLETED = re.compile(r"\bUI_COMMIT_COMPLETED\b")


@dataclass(frozen=True)
class ConfigChange:
    platform: str  # the family whose message matched: ios/eos, junos, linux
    event: str
    user: str | None


class ChangeDetector:
    def __init__(self, linux_pattern: str = ""):
        self._linux = re.compile(linux_pattern) if linux_pattern else None

    def detect(self, text: str) -> ConfigChange | None:
        if "%SYS-" in text:
            match = _IOS_EOS.search(text)
            if match is not None:
                user = match.group("who") if match.group("on") else None
                return ConfigChange("cisco_ios/arista_eos", f"CONFIG_{match.group('kind')}", _clean(user))
        if "UI_COMMIT" in text:
            match = _JUNOS_COMMIT.search(text)
            # `commit check` validates and changes nothing.
            if match is not None and "check" not in match.group("operation"):
                return ConfigChange("juniper_junos", "UI_COMMIT", _clean(match.group("user")))
            if _JUNOS_COMMIT_COMPLETED.search(text):
                return ConfigChange("juniper_junos", "UI_COMMIT_COMPLETED", None)
        if self._linux is not None:
            match = self._linux.search(text)
            if match is not None:
                return ConfigChange("linux", "pattern", _clean(match.group("user")))
        return None


def _clean(user: str | None) -> str | None:
    user = (user or "").strip().strip("'\"")
    return user[:255] if user and user != "-" else None
