"""Secrets out of a configuration before it is stored: ``redact(platform, text)``.

Every secret *value* (password, hash, key, SNMP community, pre-shared key, ...) is replaced by the
fixed marker ``<redacted>``; the keyword, the encryption type and everything else on the line
stay, so a diff still shows that a secret was added, removed, moved or re-typed, but never its
value. A quoted value stays quoted (``"<redacted>"``). The text keeps its line structure: the
output has exactly as many lines as the input, and only secret values change.

``redact`` is deterministic and idempotent (``redact(p, redact(p, x)) == redact(p, x)``), so the
content hash taken after it is stable from run to run. The flip side: a rotated secret whose
structure did not change (same keyword, same type) produces the same redacted text, and the
archive shows no change for it. That is intended - the archive must not learn the value.

Platform families
-----------------
``cisco_ios``, ``cisco_xe``, ``cisco_nxos``, ``arista_eos``: line rules for ``enable secret|password``
(``level N``, types 0-10/8a/sha512), ``username ... secret|password`` (``privilege``/``role``
between; ``nopassword`` and ``ssh-key`` are not secrets), ``aaa root secret``, indented
``password [N] X`` (line, dot1x, NX-OS BGP neighbor), ``snmp-server community X``,
``snmp-server host H [vrf V] [traps|informs] [version 1|2c] COMMUNITY`` (v3 user names are kept),
``snmp-server user ... auth ALG X priv [ALG [BITS]] Y``, ``snmp mib community-map X``,
``tacacs-server|radius-server [host ...] key [N] X``, ``key [N] X`` / ``pac key`` inside
``tacacs server NAME`` / ``radius server NAME`` blocks, ``server-private H ... key``,
``server-key``, ``key-string [N] X`` anywhere (key chains, HSRP, VRRP), ``neighbor X password``,
``[ip|ipv6] ospf authentication-key`` / ``authentication-key`` (not NTP),
``message-digest-key N md5|shaN [N] X``, ``ntp authentication-key N ALG X [N]`` (IOS/NX-OS) and
``ntp authentication-key N ALG [N] X`` (EOS), ``crypto isakmp key [N] X address|hostname``,
``pre-shared-key address|hostname H ... key X``, IKEv2 ``pre-shared-key [local|remote] X``,
``pre-share key X``, ``shared-key X``, ``ppp chap password``, ``ppp pap sent-username U password``,
``wpa-psk ascii|hex [N] X``, HSRP/VRRP/GLBP plain-text ``authentication [text] X``,
IS-IS ``isis password`` / ``area-password`` / ``domain-password``, OSPFv3 ``ipsec spi N`` keys,
``key config-key password-encrypt X``, EOS ``secret ID 0|7|8a X`` (shared secret profiles) and
TerminAttr ``-cvauth=key,X``. A line that matches none of these but has ``password X`` or
``secret X`` (not followed by ``encryption``, ``minimum``, ``restriction``, ``policy``,
``profile``, ``format``) has everything after the keyword (and its type) redacted.
Where a value is the last argument on the device (enable, username, keys of tacacs/radius, BGP,
OSPF, key-string, ...) the rest of the line is the value, since IOS accepts blanks there; a quoted
NX-OS value ends at its closing quote. ``cisco_nxos`` takes the ``username`` value as one token
(NX-OS prints ``role ...`` after it).

``juniper_junos`` (``display set`` and curly-brace ``show configuration``): the value after
``encrypted-password``, ``secret``, ``simple-password``, ``authentication-password``,
``privacy-password``, ``privacy-key``, ``community-name``, ``chap-secret``, ``pap-password``,
``shared-secret``, ``pre-shared-key ascii-text|hexadecimal``, ``key ascii-text|hexadecimal``,
``authentication-key X`` (but ``authentication-key N type T value X`` redacts only X: the NTP key
id is not a secret), ``md5 N key X``, a quoted ``password "X"`` (``system login password
minimum-length`` stays); the SNMP community name (``set snmp community X ...`` and
``community X {`` / ``community X;`` directly under ``snmp {``; ``policy-options community`` is
not a secret); and on any line ending in ``## SECRET-DATA`` the last value before ``;``, whatever
its keyword.

``linux`` (the simulator backs up ``/etc/network/interfaces``; common formats are covered too):
``/etc/shadow`` and ``/etc/passwd`` lines (the password field unless it is empty, ``x``, ``*``,
``!``...; a leading ``!`` - a locked account - stays visible), assignments ``NAME=VALUE``,
``NAME: VALUE``, ``NAME = VALUE`` (shell, env, INI, YAML, JSON, WireGuard) and ``NAME VALUE``
(interfaces(5), sshd-like) whose name is a secret:
containing ``password``, ``passwd``, ``passphrase``, ``secret``, ``psk``, ``token``,
``credential`` or ending in ``pass`` or ``key`` (``wpa-psk``, ``wireless-key1``,
``wpa-wep-key0``, ``PrivateKey``, ``PresharedKey``, ``API_KEY``), but not names about a secret
rather than holding one (``...file``, ``...path``, ``...mgmt``, ``...authentication``,
``...length``, ``PublicKey``, ``HostKey``, ``PasswordAuthentication``, ``PermitEmptyPasswords``,
``wpa-private-key`` (a file name), ...); command-line flags ``--password X`` / ``--secret=X``
(also passwd, passphrase, psk, token). A value that is a whole quoted string keeps its quotes;
after a closing quote only a ``,``/``;`` and a comment may follow, otherwise the rest is the value.

Unknown platforms (anything else, e.g. ``cisco_xr`` or a firewall) get all of the above: each
line goes to the first family whose rules match it (Cisco-style, then Junos-style, then
Linux-style; one family per line keeps the result idempotent), and a line none of them matched
loses everything after any word containing password/passwd/passphrase/secret/psk (an optional
type such as ``7`` or FortiOS ``ENC`` stays). Conservative: it rather redacts a word too many than
leaks a value.

Everywhere, also inside comments, banners and descriptions: crypt(3)-style hashes
(``$1$``, ``$2b$``, ``$5$``, ``$6$``, ``$8$``, ``$9$``, ``$y$``, ``$apr1$``, ...) and the password
in URLs (``scp://user:PASSWORD@host/...``).

Judgement calls
---------------
* Prose is not redacted: Cisco/EOS/NX-OS lines that are ``description ...``, ``remark ...``
  (also ``neighbor X description``, ``access-list N remark``, EOS ``10 remark``),
  ``snmp-server location|contact ...``, banner text; Junos ``description``/``message``/
  ``announcement`` values (the last thing on their line). Words like "password" or "secret" there
  are almost always prose (``description password reset portal``), and rewriting operator text
  would hide real changes. A secret pasted into prose is an operator error better caught by a
  compliance ``forbid_regex`` rule. Prose is only recognised where it can start (a user named
  ``description`` is not prose), and hashes and URL passwords are redacted even inside prose.
* Where the text is ambiguous the rules lean towards redaction (Cisco values that are the last
  argument take the rest of the line). A value can only survive where it is genuinely ambiguous:
  a secret that starts with a type-like word and a blank (``enable secret 5 x`` is type 5,
  password "x"; ``password 7`` alone is the password "7"), or a secret that equals a word the
  rules skip after ``password`` (``encryption``, ``minimum``, ``policy``, ...).
* Words that merely contain "key"/"password" are never redacted: ``crypto key generate``,
  ``key-exchange``, ``key chain NAME``, ``key 1`` (key id), ``ntp server H key 1``,
  ``ntp trusted-key``, ``key-hash``, ``service password-encryption``, ``security passwords
  min-length``, ``password encryption aes``, ``wpa-key-mgmt``. Key-chain names, NTP key ids,
  SNMPv3 user/group names and public keys (``ssh-rsa ...``, ``PublicKey``) are not secrets.
* SNMP v1/v2c community names are secrets (they are the credential), except the factory defaults
  ``public`` and ``private`` on IOS/EOS: they guard nothing, and compliance rules look for them.
* Commented-out assignments (``#password=...``) are redacted: an old secret is still a secret.
  Comment prose without ``=``/``:`` (``# set the password below``) is kept.
"""

from __future__ import annotations

import re
from collections.abc import Callable

MARKER = "<redacted>"

__all__ = ["MARKER", "redact"]

# --- values ------------------------------------------------------------------------------------

_QUOTED_VALUE = re.compile(r'"(?:[^"\\]|\\.)*"|\'[^\']*\'')


def _mark(value: str) -> str:
    """The marker for ``value``; a quoted value stays quoted."""
    if len(value) >= 2 and _QUOTED_VALUE.fullmatch(value):
        return value[0] + MARKER + value[0]
    return MARKER


def _sub(rx: re.Pattern[str], line: str) -> tuple[str, bool]:
    """``line`` with every group named ``v``/``v2``/``v3`` of every match of ``rx`` marked."""
    pieces: list[str] = []
    pos = 0
    hit = False
    for m in rx.finditer(line):
        hit = True
        spans = sorted(m.span(g) for g in ("v", "v2", "v3") if g in rx.groupindex and m.group(g) is not None)
        for start, end in spans:
            if start < pos:  # overlapping groups: already covered
                continue
            pieces.append(line[pos:start])
            pieces.append(_mark(line[start:end]))
            pos = end
    if not hit:
        return line, False
    pieces.append(line[pos:])
    return "".join(pieces), True


def _apply(rules: tuple[re.Pattern[str], ...], line: str) -> tuple[str, bool]:
    any_hit = False
    for rx in rules:
        line, hit = _sub(rx, line)
        any_hit = any_hit or hit
    return line, any_hit


def _c(pattern: str, flags: int = 0) -> re.Pattern[str]:
    return re.compile(pattern, flags)


# --- everywhere ----------------------------------------------------------------------------------

_CRYPT_HASH = _c(r"(?<![^\s\"'=:,(!*])(?P<v>\$(?:1|2[abxy]?|5|6|8|9|y|gy|apr1|sha1|md5|argon2(?:id|i|d)|"
                 r"pbkdf2(?:-sha\d+)?|scrypt)\$[^\s\"':;,]+)")
_URL_PASSWORD = _c(r"(?<=://)[^\s/:@\"']+:(?P<v>[^\s/\"']+)(?=@[^\s@/\"']+)")
_EVERYWHERE = (_CRYPT_HASH, _URL_PASSWORD)

# --- pre-filters ---------------------------------------------------------------------------------
#
# Almost every line of a configuration holds no secret, and running some 40 rules over each of
# them was most of a backup's CPU. Each family therefore first asks one compiled pattern whether a
# line can hold a secret at all: a word that every rule of that family needs in the text it
# matches. Only lines that have one go through the rules; the others are returned unchanged
# (which is what the rules would have returned, with no rule hit). A pre-filter must match
# wherever any of its family's rules could match; it may match more (that only costs time). When
# a rule is added, its pre-filter must get a word the rule requires (app/tests/test_redact_prefilter.py
# compares the result with the rules run on every line, and checks each rule against its pre-filter).

# _CRYPT_HASH needs "$", _URL_PASSWORD "://".
_EVERYWHERE_CANDIDATE = _c(r"\$|://")
# _CISCO_COMMON, usernames, server-block keys, NTP keys, ISAKMP keys and _FALLBACK: each needs one of
# these words (``password``/``secret``/``key`` are parts of most keywords: area-password, key-string,
# authentication-key, pre-share key, -cvauth=key, ...).
_CISCO_CANDIDATE = _c(r"password|secret|key|community|authentication|snmp-server (?:host|user)|ipsec spi|wpa-psk")
# _JUNOS_RULES, _JUNOS_COMMUNITY and _JUNOS_SECRET_DATA.
_JUNOS_CANDIDATE = _c(r"password|secret|key|community|SECRET-DATA")
# The Linux assignment and flag rules (a secret name contains one of these, case-insensitively; also
# after str.lower(), which only maps the Kelvin sign to an ASCII "k", and re's IGNORECASE matches
# that too) and _LAST_RESORT. The /etc/shadow and /etc/passwd patterns are anchored and run anyway.
_LINUX_CANDIDATE = _c(r"pass|secret|psk|token|credential|key", re.IGNORECASE)
# Junos block tracking only acts on lines with a brace.
_BRACE = _c(r"[{}]")


def _everywhere(line: str) -> str:
    if not _EVERYWHERE_CANDIDATE.search(line):
        return line
    return _apply(_EVERYWHERE, line)[0]


# --- Cisco IOS / IOS-XE / NX-OS, Arista EOS ------------------------------------------------------

_TYPE = r"(?:\d{1,2}|8a|sha512|sha256|ENC)"  # ENC: FortiOS, for unknown platforms
_T = rf"(?:{_TYPE} (?=\S))?"  # an optional encryption type before the value
_VQ = r'"[^"\s]*"(?=\s|$)'  # an NX-OS style quoted value
_REST = rf"(?P<v>{_VQ}|\S(?:.*\S)?)"  # the value is the rest of the line
_TOK = rf"(?P<v>{_VQ}|\S+)"  # the value is one token
_NOT_A_SECRET_AFTER_PASSWORD = (r"(?!(?:encryption|encryption-key|minimum|minimum-length|restriction|policy|profile|"
                                 r"format)(?:\s|$))")

_CISCO_COMMON = tuple(_c(p) for p in (
    rf"^enable (?:secret|password)(?: level \d+)? {_T}{_REST}",
    rf"^aaa root secret {_T}{_REST}",
    rf"^\s+password {_NOT_A_SECRET_AFTER_PASSWORD}{_T}{_REST}",
    # The factory defaults stay visible: they guard nothing, and compliance must see them.
    rf"^snmp-server community (?!(?:public|private)(?:\s|$)){_TOK}",
    rf"^(?!.*\bversion 3\b)snmp-server host \S+(?: vrf \S+)?(?: (?:informs|traps))?(?: version (?:1|2c))? {_TOK}",
    rf"^snmp-server user .*? auth (?:md5|sha\S*) {_TOK}",
    rf"^snmp-server user .*? priv (?:(?:3?des\S*|aes\S*)(?: (?:128|192|256))? )?{_TOK}",
    rf"^snmp mib community-map {_TOK}",
    rf"^(?:tacacs|radius)-server (?:.*? )?key {_T}{_REST}",
    rf"^\s*server-private \S+ (?:.*? )?key {_T}{_REST}",
    rf"(?<![\w-])server-key {_T}{_REST}",
    rf"(?<![\w-])key-string {_T}{_REST}",
    rf"^\s*neighbor \S+ password {_T}{_REST}",
    rf"^(?!\s*ntp\b).*?(?<![\w-])authentication-key {_T}{_REST}",
    rf"(?<![\w-])message-digest-key \d+ (?:md5|sha\d*) {_T}{_REST}",
    rf"^\s*pre-shared-key (?:address|hostname) (?:.*? )?key {_T}{_REST}",
    rf"^\s*pre-shared-key (?!(?:address|hostname) )(?:(?:local|remote) )?{_T}{_REST}",
    rf"(?<![\w-])pre-share key {_T}{_REST}",
    rf"(?<![\w-])shared-key {_T}{_REST}",
    rf"^\s*ppp chap password {_T}{_REST}",
    rf"^\s*ppp pap sent-username \S+ password {_T}{_REST}",
    rf"^\s*wpa-psk (?:ascii|hex) {_T}{_REST}",
    rf"^\s*(?:standby|vrrp|glbp|hsrp)(?: \d+)?(?: peer)? authentication "
    rf"(?!(?:md5|ietf-md5|text-md5|key-chain)\s)(?:text )?{_TOK}",
    rf"^\s+authentication text {_TOK}",
    rf"^\s*(?:isis password|area-password|domain-password) {_TOK}",
    rf"\bipsec spi \d+ (?:.*? )?(?:md5|sha1|sha256) (?:\d (?=\S))?{_TOK}",
    rf"\bipsec spi \d+ esp (?:aes-cbc(?: (?:128|192|256))?|3des|des) (?:\d (?=\S))?{_TOK}",
    rf"^key config-key password-encrypt {_REST}",
    rf"^\s+secret \S+ (?:0|7|8a) {_TOK}",  # EOS shared secret profile: secret ID TYPE X [lifetimes]
    r"-cvauth=key,(?P<v>[^\s,]+)",
))
_IOS_USERNAME = _c(rf"^username \S+ (?:.*? )?(?:secret|password) {_T}{_REST}")
_NXOS_USERNAME = _c(rf"^username \S+ (?:.*? )?(?:secret|password) {_T}{_TOK}")
_SERVER_BLOCK = _c(r"^(?:tacacs|radius) server \S+")
_SERVER_BLOCK_KEY = _c(rf"^\s+(?:pac )?key {_T}{_REST}")
_NTP_KEY = _c(r"^ntp authentication-key \d+ \S+ ")
_NTP_IOS = _c(rf"^ntp authentication-key \d+ \S+ {_TOK}(?: \d)?\s*$")
_NTP_EOS = _c(rf"^ntp authentication-key \d+ \S+ (?:{_TYPE} )?{_TOK}\s*$")
_NTP_ANY = _c(rf"^ntp authentication-key \d+ \S+ {_REST}")
_ISAKMP_KEY = _c(r"^crypto isakmp key ")
_ISAKMP_STRICT = _c(rf"^crypto isakmp key (?:{_TYPE} )?{_TOK} (?=(?:address|hostname)\b)")
_ISAKMP_ANY = _c(rf"^crypto isakmp key {_REST}")
_FALLBACK = _c(rf"(?<![\w-])(?:password|secret) {_NOT_A_SECRET_AFTER_PASSWORD}{_T}{_REST}")
# Free text, only where it can start: the whole line is prose.
_CISCO_PROSE = _c(r"^\s*(?:neighbor \S+ |(?:ip |ipv6 )?access-list \S+ (?:\d+ )?|\d+ )?(?:description|remark)(?:\s|$)|"
                  r"^snmp-server (?:location|contact)(?:\s|$)")
_BANNER = _c(r"^banner \S+(?: (?P<d>\^C|\S)(?P<rest>.*))?$")


def _cisco_line(line: str, parent: str, nxos: bool, eos: bool) -> tuple[str, bool]:
    if not _CISCO_CANDIDATE.search(line):
        return line, False
    line, hit = _apply(_CISCO_COMMON, line)
    line, h = _sub(_NXOS_USERNAME if nxos else _IOS_USERNAME, line)
    hit = hit or h
    if _SERVER_BLOCK.match(parent) and line[:1].isspace():
        line, h = _sub(_SERVER_BLOCK_KEY, line)
        hit = hit or h
    if _NTP_KEY.match(line):
        line, h = _sub(_NTP_EOS if eos else _NTP_IOS, line)
        if not h:
            line, h = _sub(_NTP_ANY, line)
        hit = True
    if _ISAKMP_KEY.match(line):
        line, h = _sub(_ISAKMP_STRICT, line)
        if not h:
            line, h = _sub(_ISAKMP_ANY, line)
        hit = True
    if not hit:
        line, hit = _sub(_FALLBACK, line)
    return line, hit


def _split_prose(line: str, prose: re.Pattern[str]) -> tuple[str, str]:
    m = prose.search(line)
    return (line, "") if m is None else (line[:m.start()], line[m.start():])


def _banner_end(lines: list[str], index: int) -> int | None:
    """Index of the last line of the banner starting at ``lines[index]``, or None if not a banner.

    A banner whose end cannot be found is not treated as one, so it cannot hide later lines.
    """
    m = _BANNER.match(lines[index])
    if m is None:
        return None
    delimiter = m.group("d")
    if delimiter is None:  # EOS: text lines up to EOF
        for j in range(index + 1, len(lines)):
            if lines[j].strip() == "EOF":
                return j
        return None
    if delimiter in m.group("rest"):
        return index
    for j in range(index + 1, len(lines)):
        if delimiter in lines[j]:
            return j
    return None


class _Cisco:
    """Line-by-line Cisco/EOS redaction; remembers the enclosing block and skips banner text."""

    def __init__(self, nxos: bool = False, eos: bool = False):
        self.nxos, self.eos = nxos, eos
        self.parent = ""
        self.banner_until = -1

    def line(self, lines: list[str], i: int) -> tuple[str, bool, bool]:
        """(new line, a rule matched, the line is banner text or a comment)."""
        line = lines[i]
        if i <= self.banner_until:
            return line, False, True
        end = _banner_end(lines, i)
        if end is not None:
            self.banner_until = end
            self.parent = line
            return line, False, True
        stripped = line.strip()
        if stripped and not line[:1].isspace():
            self.parent = line
        if not stripped or stripped.startswith("!"):
            return line, False, True
        if _CISCO_PROSE.match(line):
            return line, False, True
        line, hit = _cisco_line(line, self.parent, self.nxos, self.eos)
        return line, hit, False


def _redact_cisco(lines: list[str], nxos: bool = False, eos: bool = False) -> list[str]:
    cisco = _Cisco(nxos, eos)
    return [_everywhere(cisco.line(lines, i)[0]) for i in range(len(lines))]


# --- Juniper Junos -------------------------------------------------------------------------------

_JV = r'(?P<v>"(?:[^"\\]|\\.)*"|[^\s;{}"]+)'
_JUNOS_RULES = tuple(_c(p) for p in (
    rf"(?<![\w-])(?:encrypted-password|secret|simple-password|authentication-password|privacy-password|"
    rf"privacy-key|community-name|chap-secret|pap-password|shared-secret|"
    rf"pre-shared-key (?:ascii-text|hexadecimal)|key (?:ascii-text|hexadecimal)) {_JV}",
    rf"(?<![\w-])authentication-key (?!\d+ type\b){_JV}",
    rf"(?<![\w-])authentication-key \d+ (?:.*? )?value {_JV}",
    rf"(?<![\w-])md5 \d+ key {_JV}",
    r'(?<![\w-])password (?P<v>"(?:[^"\\]|\\.)*")',
    rf"^(?:set|deactivate|activate|delete|protect|unprotect) (?:.*? )?snmp community {_JV}",
))
_JUNOS_SECRET_DATA = _c(rf"{_JV}(?=;\s*## SECRET-DATA)")
_JUNOS_COMMUNITY = _c(rf"^\s*(?:(?:inactive|protect|replace): )?community {_JV}(?=\s*[{{;])")
# Free text is a leaf's value, the last thing on the line.
_JUNOS_PROSE = _c(r'(?:^|\s)(?:description|message|announcement) (?:"(?:[^"\\]|\\.)*"|[^\s;"]+);?\s*$')
_JUNOS_COMMENT = _c(r"^\s*(?:#|/\*|\*|annotate\s)")
_JUNOS_BLOCK_NAME = _c(r"^\s*(?:(?:inactive|protect|replace): )?(\S+)")
_QUOTED_STRINGS = _c(r'"(?:[^"\\]|\\.)*"')


def _junos_line(line: str, stack: list[str]) -> tuple[str, bool]:
    if not _JUNOS_CANDIDATE.search(line):
        return line, False
    head, prose = _split_prose(line, _JUNOS_PROSE)
    head, hit = _apply(_JUNOS_RULES, head)
    if stack and stack[-1] == "snmp":
        head, h = _sub(_JUNOS_COMMUNITY, head)
        hit = hit or h
    line, h = _sub(_JUNOS_SECRET_DATA, head + prose)
    return line, hit or h


def _junos_track(line: str, stack: list[str]) -> None:
    """Follow the curly-brace hierarchy: push a block's name at ``{``, pop at ``}``."""
    if not _BRACE.search(line):
        return
    code = _QUOTED_STRINGS.sub('""', line).split("##", 1)[0].split("/*", 1)[0].rstrip()
    if code.endswith("{"):
        m = _JUNOS_BLOCK_NAME.match(code)
        stack.append(m.group(1) if m else "")
    for _ in range(code.count("}")):
        if stack:
            stack.pop()


def _redact_junos(lines: list[str]) -> list[str]:
    out: list[str] = []
    stack: list[str] = []
    for line in lines:
        if _JUNOS_COMMENT.match(line):
            out.append(_everywhere(line))
            continue
        out.append(_everywhere(_junos_line(line, stack)[0]))
        _junos_track(line, stack)
    return out


# --- Linux ---------------------------------------------------------------------------------------

_PLACEHOLDER_PASSWORD = _c(r"[!*x]*|\*LK\*|\*NP\*")
# the password field; a leading "!" (locked account) stays visible
_SHADOW = _c(r"^[A-Za-z_][\w.-]*\$?:!*(?P<v>[^:\s]*):(?:\d*:){6}[^:]*$")
_PASSWD = _c(r"^[A-Za-z_][\w.-]*\$?:!*(?P<v>[^:\s]*):\d+:\d+:[^:]*:[^:]*:[^:]*$")
_ASSIGNMENT = _c(r"""^(?P<pre>\s*(?:[#;]\s*)?(?:-\s+)?(?:export\s+)?)(?P<q>["']?)(?P<name>[A-Za-z_][\w.\-]*)(?P=q)"""
                 r"""(?P<sep>\s*[=:]\s*|\s+)(?P<val>\S(?:.*\S)?)""")
# a quoted value, then at most a separator and a comment (JSON "x", / INI "x" ; c / shell 'x' # c)
_QUOTED_HEAD = _c(r"""(?P<v>"(?:[^"\\]|\\.)*"|'[^']*')(?=\s*[,;]?\s*(?:[#;].*)?$)""")
_FLAG = _c(r"(?<!\S)--?(?:password|passwd|passphrase|secret|psk|token)(?:=|\s+)(?P<v>\S+)")
_SECRET_WORD = _c(r"(?:password|passwd|passphrase|secret|psk|token|credential)(?![a-z])")
_KEY_NAME = _c(r"(?:^|[_.\-])(?:key|pass)\d*$|"
               r"(?:secret|private|preshared|api|auth|access|encryption|wep|wireless)key\d*$")
_CAMEL_KEY = _c(r"[a-z0-9]Key\d*$")
_NOT_SECRET_NAME = _c(r"(?:file|files|path|dir|directory|length|len|mgmt|management|type|method|methods|"
                      r"algorithm|algorithms|exchange|authentication|auth|policy|mode|size|bits|timeout|interval|"
                      r"lifetime|min|max|minlen|maxlen|command|cmd|prompt|format|enabled|enable|required|"
                      r"_id|-id|keyid)$|public|pubkey|pub[_.\-]|host[_.\-]?key|^wpa-private-key\d?$")


def _secret_name(name: str) -> bool:
    lower = name.lower()
    if _NOT_SECRET_NAME.search(lower):
        return False
    return bool(_SECRET_WORD.search(lower) or _KEY_NAME.search(lower) or _CAMEL_KEY.search(name))


def _linux_assignment(line: str) -> tuple[str, bool]:
    m = _ASSIGNMENT.match(line)
    if m is None or not _secret_name(m.group("name")):
        return line, False
    if re.search(r"[#;]", m.group("pre")) and not re.search(r"[=:]", m.group("sep")):
        return line, False  # comment prose, not a commented-out assignment
    start = m.start("val")
    value = m.group("val")
    quoted = _QUOTED_HEAD.match(value)
    if quoted is not None:
        return line[:start] + _mark(quoted.group("v")) + line[start + quoted.end("v"):], True
    return line[:start] + MARKER + line[m.end("val"):], True


def _linux_line(line: str) -> tuple[str, bool]:
    for rx in (_SHADOW, _PASSWD):
        m = rx.match(line)
        if m is not None:
            if not _PLACEHOLDER_PASSWORD.fullmatch(m.group("v")):
                line = line[:m.start("v")] + MARKER + line[m.end("v"):]
            return line, True
    if not _LINUX_CANDIDATE.search(line):
        return line, False
    line, hit = _linux_assignment(line)
    line, h = _sub(_FLAG, line)
    return line, hit or h


def _redact_linux(lines: list[str]) -> list[str]:
    return [_everywhere(_linux_line(line)[0]) for line in lines]


# --- dispatch ------------------------------------------------------------------------------------

# Unknown platforms, when no family matched: any word holding a secret-ish name takes the rest.
_LAST_RESORT = _c(rf"(?<![\w-])[\w-]*(?:password|passwd|passphrase|secret|psk)[\w-]* "
                  rf"{_NOT_A_SECRET_AFTER_PASSWORD}{_T}{_REST}", re.IGNORECASE)


def _redact_generic(lines: list[str]) -> list[str]:
    """Each line goes to the first family with a matching rule: Cisco-style, Junos-style, Linux-style.

    One family per line keeps the result idempotent (rules of different families would otherwise
    redact each other's type tokens differently on a second pass).
    """
    cisco = _Cisco()
    stack: list[str] = []
    out: list[str] = []
    for i, line in enumerate(lines):
        new, hit, skip = cisco.line(lines, i)
        if not skip and not hit:
            new, hit = _junos_line(line, stack)
            if not hit:
                new, hit = _linux_line(line)
            if not hit and _LINUX_CANDIDATE.search(new):
                new, hit = _sub(_LAST_RESORT, new)
        _junos_track(line, stack)
        out.append(_everywhere(new))
    return out


_FAMILIES: dict[str, Callable[[list[str]], list[str]]] = {
    "cisco_ios": _redact_cisco,
    "cisco_xe": _redact_cisco,
    "cisco_nxos": lambda lines: _redact_cisco(lines, nxos=True),
    "arista_eos": lambda lines: _redact_cisco(lines, eos=True),
    "juniper_junos": _redact_junos,
    "juniper": _redact_junos,
    "linux": _redact_linux,
}


def redact(platform: str, text: str) -> str:
    """``text`` with every secret value replaced by :data:`MARKER`, line for line.

    ``platform`` picks the rules (see the module docstring); an unknown platform gets all of them.
    Deterministic and idempotent; the number of lines never changes.
    """
    lines = text.split("\n")
    return "\n".join(_FAMILIES.get(platform, _redact_generic)(lines))
