"""netjobs.redact's pre-filters change nothing: the output equals the rules run on every line.

``redact`` only hands a line to a family's rules when one compiled pattern (``_*_CANDIDATE``)
finds a word those rules need. The reference here is the same module with every pre-filter
replaced by a pattern that matches everything, so each line goes through every rule, as before
the pre-filters existed. Both must agree byte for byte, for every platform, on the simulator's
realistic configurations, on the hand-written samples of test_redact, on tricky lines that hit
every rule, and on generated text. A second check goes rule by rule: wherever a rule matches a
line, its family's pre-filter matches that line too.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import netjobs.redact as R
from netjobs.devsim.configs import generated_body, running_config, sized_body
from netjobs.redact import redact
from netjobs.services.backup import normalize_config
from tests.test_redact import RESERVED, SAMPLES, configurations, unmark

# Every platform key redact() knows, plus unknown ones (all families, one per line).
PLATFORMS = ["cisco_ios", "cisco_xe", "cisco_nxos", "arista_eos", "juniper_junos", "juniper", "linux",
             "cisco_xr", "fortinet"]
SIM_PLATFORMS = ["cisco_ios", "arista_eos", "juniper_junos", "linux"]
PREFILTERS = ("_EVERYWHERE_CANDIDATE", "_CISCO_CANDIDATE", "_JUNOS_CANDIDATE", "_LINUX_CANDIDATE", "_BRACE")
_EVERYTHING = re.compile("")


@contextmanager
def _without_prefilters():
    with mock.patch.multiple(R, **{name: _EVERYTHING for name in PREFILTERS}):
        yield


def reference(platform: str, text: str) -> str:
    """``redact`` with every rule tried on every line (no pre-filter)."""
    with _without_prefilters():
        return redact(platform, text)


def assert_same(platform: str, text: str) -> None:
    expected = reference(platform, text)
    got = redact(platform, text)
    if got != expected:
        for n, (a, b) in enumerate(zip(got.split("\n"), expected.split("\n")), 1):
            assert a == b, f"{platform} line {n}: pre-filtered {a!r} != rules on every line {b!r}"
    assert got == expected


def test_reference_really_runs_without_prefilters():
    line = "interface Gi0/1"
    assert not R._CISCO_CANDIDATE.search(line)
    with _without_prefilters():
        assert R._CISCO_CANDIDATE.search(line) and R._BRACE.search(line)
    assert not R._CISCO_CANDIDATE.search(line)


# --- the simulator's configurations ---------------------------------------------------------------

@pytest.mark.parametrize("source", SIM_PLATFORMS)
@pytest.mark.parametrize("hostname", ["bench-0001", "core-r1.lab"])
def test_simulated_configs_redact_as_before_on_every_platform(source, hostname):
    texts = [generated_body(source, hostname),
             running_config(source, hostname, sized_body(source, hostname, 1500, revision=3), now=1.7e9)]
    texts.append(normalize_config(source, texts[1]))
    for platform in PLATFORMS:
        for text in texts:
            assert_same(platform, text)


# --- hand-written text ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_hand_written_samples_redact_as_before_on_every_platform(name):
    for sample in SAMPLES[name]:
        text, _ = unmark(sample)
        for platform in PLATFORMS:
            assert_same(platform, text)
            assert_same(platform, redact(platform, text))


# Lines that hit each rule, and secrets in odd places: inside prose, banners and comments, with
# tabs, carriage returns and other whitespace, in upper case, with Unicode letters that case-fold
# to ASCII (Kelvin sign, long s), glued to punctuation, at the start and end of the text.
TRICKY = r"""enable secret level 5 5 $1$x$y
enable password 7 0822455D0A16544541
aaa root secret sha512 $6$a$b
 password 7 045802150C
 password encryption aes
 password minimum-length 8
  password
snmp-server community s3cret RO 10
snmp-server community public RO
snmp-server host 10.1.1.1 vrf MGMT informs version 2c comm
snmp-server host 10.1.1.2 traps c2
snmp-server host 10.1.1.3 version 3 priv v3user
snmp-server user u g v3 auth sha authpw priv aes 128 privpw
snmp-server user u g v3 auth md5 authpw priv 3des privpw
snmp mib community-map cm engineid 1
tacacs-server host 10.1.1.1 key 7 abc
tacacs-server host 10.1.1.1 timeout 5 key some key with blanks
radius-server key rad key
 server-private 10.1.1.1 auth-port 1 key 7 abc
 client 10.1.1.1 server-key 7 abc
  key-string 7 0A0B
 standby 1 authentication md5 key-string 7 xyz
 neighbor 10.0.0.1 password 7 abc
 neighbor PEERS password my pass
 ip ospf authentication-key 7 abc
 ipv6 ospf authentication-key abc
 ip ospf message-digest-key 1 md5 7 abc
 message-digest-key 2 sha256 0 abc
 pre-shared-key address 10.0.0.1 key abc
 pre-shared-key hostname h.example key 6 abc
 pre-shared-key local abc
 pre-shared-key remote 6 abc
 authentication local pre-share key abc
      shared-key 7 abc
 ppp chap password 7 abc
 ppp pap sent-username u password 0 abc
 wpa-psk ascii 7 abc
 wpa-psk hex 0 abc
 standby 1 authentication text abc
 vrrp 2 authentication abc
 glbp 1 authentication md5 key-chain K
 hsrp 1 peer authentication text x
   authentication text abc
 isis password abc
 area-password abc
 domain-password abc
 ipv6 ospf authentication ipsec spi 256 md5 1234abcd
 ipv6 ospf encryption ipsec spi 300 esp aes-cbc 128 0 1234 sha1 abcd
key config-key password-encrypt abcdef
   secret profile1 7 abc
   secret p 8a $abc
   exec /usr/bin/TerminAttr -cvaddr=1.1.1.1:9910 -cvauth=key,abc -cvvrf=MGMT
username u privilege 15 secret 9 $9$x$y
username a password 5 $5$s$h role network-admin
username u nopassword
username u sshkey ssh-rsa AAAA
tacacs server ISE
 address ipv4 10.1.1.1
 key 7 abc
 key plain text key
radius server R
 pac key 7 abc
ntp authentication-key 1 md5 7 abc
ntp authentication-key 1 md5 abc 7
ntp authentication-key 2 sha1 abc def ghi
ntp server 10.1.1.1 key 1
crypto isakmp key abc address 1.2.3.4
crypto isakmp key weird
crypto key generate rsa modulus 2048
key chain K
 key 1
ip ftp password abc
foo secret 5 bar
  password policy X
 description secret password here $6$in$prose
snmp-server location secret room
 remark password abc
 neighbor 1.1.1.1 description password abc
access-list 10 remark secret abc
ip access-list 10 20 remark key abc
10 remark key abc
banner motd ^C
enable secret 5 inside-banner
snmp-server community in-banner RO
^C
banner login #password# abc
banner exec
secret x
password y
EOF
! enable secret 5 commented
!password abc
enable	secret 5 tab
enable secret 5 cr-value
enable secret 5 ff-value
ENABLE SECRET 5 UPPER
PASSWORD abc
Password abc
username=u password=p
set system root-authentication encrypted-password "$6$x"
set system tacplus-server 1.1.1.1 secret "$9$abc"
set protocols ospf area 0 interface ge-0/0/0 authentication simple-password x
set snmp v3 usm local-engine user u authentication-sha authentication-password x
set snmp v3 usm local-engine user u privacy-aes128 privacy-password x
set snmp v3 usm local-engine user u privacy-aes128 privacy-key "x"
set snmp v3 snmp-community i community-name "x"
set interfaces ppp0 unit 0 ppp-options chap chap-secret x
set interfaces ppp0 unit 0 ppp-options pap pap-password x
set access radius-server 1.1.1.1 shared-secret x
set security ike policy P pre-shared-key ascii-text "x"
set security authentication-key-chains key-chain K key 0 key hexadecimal x
set system ntp authentication-key 1 type md5 value "x"
set protocols bgp group G authentication-key "x"
set protocols ospf area 0 interface ge-0/0/0 authentication md5 1 key "x"
set system archival configuration archive-sites "scp://u@h:/c" password "x"
set system login password minimum-length 10
set snmp community c authorization read-only
deactivate snmp community c2
set policy-options community C members 65000:1
set interfaces ge-0/0/0 description "secret password"
set system login message "password x"
snmp {
    community c {
        authorization read-only;
    }
    inactive: community d;
    community "quoted {brace}";
}
system {
    unknown-knob "x"; ## SECRET-DATA
    /* password "x" */
    # secret comment
    annotate password "x";
}
root:$6$salt$hash:19000:0:99999:7:::
u:x:1000:1000::/home/u:/bin/sh
locked:!$6$x:1:0:99999:7:::
legacy:abc:1001:1001:Legacy:/home/legacy:/bin/sh
DB_PASSWORD=x
export API_TOKEN="x"
secret = x
password: x
  "password": "x",
PrivateKey = x
PresharedKey = x
PasswordAuthentication no
PermitEmptyPasswords no
HostKey /etc/ssh/ssh_host_key
    wpa-psk x
    wpa-private-key /etc/x
    wpa-key-mgmt WPA-PSK
    wireless-key1 abc
credentials_file=/x
aws_credential=abc
MYKEY=abc
myPass=abc
apiKey: abc
KEY=kelvin
ſecret x
paſſword x
PSK=abc
# set the password below
#password=old
; secret = ini
    up helper --password x --token=y --secret=z --passphrase w --psk v
boot system scp://user:pa$$w0rd@10.0.0.1/image.bin
archive path ftp://backup:pw@192.0.2.9/cfg
! comment $6$salt$hash
x=($y$abc$def)
config system admin
    edit "admin"
        set password ENC SH2abc
        set psksecret ENC abc
        set passwd abc
    next
end
some-vendor-secret-thing 7 abc
"""


def _tricky_texts() -> list[str]:
    text = TRICKY.replace("cr-value", "cr-value\r").replace("ff-value", "\x0cff-value\x0b")
    lines = text.split("\n")
    return [text, text.rstrip("\n"), "\n".join(reversed(lines)), *lines,
            # each line right after a block header, and inside an unclosed / closed banner
            *(f"tacacs server X\n{line}" for line in lines), *(f"snmp {{\n{line}\n}}" for line in lines)]


@pytest.mark.parametrize("platform", PLATFORMS)
def test_tricky_lines_redact_as_before(platform):
    for text in _tricky_texts():
        assert_same(platform, text)
        assert_same(platform, redact(platform, text))


# Every rule of the module, with the pre-filter that guards it.
RULES = ([(rx, "_CISCO_CANDIDATE") for rx in R._CISCO_COMMON]
         + [(rx, "_CISCO_CANDIDATE") for rx in (R._IOS_USERNAME, R._NXOS_USERNAME, R._SERVER_BLOCK_KEY, R._NTP_KEY,
                                                R._NTP_IOS, R._NTP_EOS, R._NTP_ANY, R._ISAKMP_KEY, R._ISAKMP_STRICT,
                                                R._ISAKMP_ANY, R._FALLBACK)]
         + [(rx, "_JUNOS_CANDIDATE") for rx in (*R._JUNOS_RULES, R._JUNOS_SECRET_DATA, R._JUNOS_COMMUNITY)]
         + [(rx, "_LINUX_CANDIDATE") for rx in (R._FLAG, R._LAST_RESORT)]
         + [(rx, "_EVERYWHERE_CANDIDATE") for rx in R._EVERYWHERE])


def test_every_rule_is_hit_by_a_tricky_line():
    lines = TRICKY.split("\n")
    missed = [rx.pattern for rx, _ in RULES if not any(rx.search(line) for line in lines)]
    assert not missed, f"no tricky line for: {missed}"
    assert any(R._SHADOW.match(line) for line in lines) and any(R._PASSWD.match(line) for line in lines)


def _check_prefilters_cover(line: str) -> None:
    for rx, name in RULES:
        if rx.search(line):
            assert getattr(R, name).search(line), f"{rx.pattern!r} matches {line!r}, {name} does not"
    m = R._ASSIGNMENT.match(line)
    if m is not None and R._secret_name(m.group("name")):
        assert R._LINUX_CANDIDATE.search(line), f"secret name in {line!r}, _LINUX_CANDIDATE misses it"
    if ("{" in line or "}" in line) != bool(R._BRACE.search(line)):
        raise AssertionError(line)


def test_prefilters_cover_every_rule_on_the_tricky_lines():
    for text in _tricky_texts():
        for line in text.split("\n"):
            _check_prefilters_cover(line)


# --- generated text --------------------------------------------------------------------------------

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Lines made of the words the rules and the samples use, glued by blanks and punctuation.
WORDS = sorted(RESERVED | {"password", "secret", "key", "community", "authentication", "snmp-server", "host",
                           "user", "ipsec", "spi", "wpa-psk", "psk", "token", "credential", "pass", "PASSWORD",
                           "Key", "KEY", "\u212aey", "ſecret", "SECRET-DATA", "##", "$1$a$b", "$6$s$h",
                           "ftp://u:p@h/x", "://", "$", "{", "}", "banner", "motd", "^C", "EOF", "!", "#",
                           "description", "tacacs", "radius", "server", "enable", "username", "ntp", "crypto",
                           "isakmp", "set", "snmp", "inactive:", "encrypted-password", "md5", "7", "0", "8a",
                           "sha512", "x", "ENC"})
SEPARATORS = [" ", " ", " ", "  ", "\t", "=", ":", ": ", " = ", '"', "'", ";", ",", "-", "_", "", "\r", "\x0c"]
_line = st.builds(lambda indent, parts: indent + "".join(parts),
                  st.sampled_from(["", "", " ", "  ", "    ", "\t", "#", "!", "# "]),
                  st.lists(st.tuples(st.sampled_from(WORDS), st.sampled_from(SEPARATORS)).map("".join),
                           min_size=1, max_size=8))
_text = st.lists(_line, min_size=1, max_size=25).map("\n".join)


@FAST
@given(platform=st.sampled_from(PLATFORMS), text=_text)
def test_generated_lines_redact_as_before(platform, text):
    assert_same(platform, text)
    for line in text.split("\n"):
        _check_prefilters_cover(line)


@FAST
@given(platform=st.sampled_from(PLATFORMS), case=configurations(["cisco", "ios", "eos", "junos", "linux"]))
def test_generated_configs_redact_as_before(platform, case):
    lines, _, _ = case
    assert_same(platform, "\n".join(lines) + "\n")


@FAST
@given(platform=st.sampled_from(PLATFORMS), text=st.text(max_size=300))
def test_any_text_redacts_as_before(platform, text):
    assert_same(platform, text)
    for line in text.split("\n"):
        _check_prefilters_cover(line)
