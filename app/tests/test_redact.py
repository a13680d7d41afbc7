"""Secrets are redacted before configurations are stored (netjobs.redact)."""

from __future__ import annotations

import re
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netjobs.devsim.configs import generated_body, running_config, simulated_secrets
from netjobs.redact import MARKER, redact
from netjobs.services.backup import normalize_config

# --- realistic samples: every secret value is written «like this» ------------------------------------

IOS_SAMPLE = r"""hostname core1
!
service password-encryption
no service password-recovery
security passwords min-length 10
password encryption aes
enable secret 9 «$9$nhEmQVczB7dqsO$X.HsgL6x1il0RxkOSSvyQYwucySCTN.nIPgCXYlUY8A»
enable password 7 «0822455D0A16544541»
enable secret level 5 5 «$1$mERr$hx5rVt7rPNoS4wqbXKX7m0»
username netops privilege 15 secret 9 «$9$2MJBozw/9R3UsU$6ehl9bYpvS/Z5rm0TB6tB3tJwNzbLo8aBRKjXyl.Y3A»
username backup privilege 1 password 7 «104D000A061843595F»
username plain password 0 «Plain Text Pass»
username admin privilege 15 nopassword
username ops view OPS secret 5 «$1$abcd$EFGHIJKLMNOPQRSTUV1234»
!
aaa new-model
aaa authentication login default group tacacs+ local
aaa group server tacacs+ TAC
 server name ISE
 server-private 10.213.1.6 key 7 «045802150C2E1D1C5A»
aaa group server radius RAD
 server-private 10.213.1.7 auth-port 1812 acct-port 1813 key 7 «1511021F07257A767B»
aaa server radius dynamic-author
 client 10.213.1.8 server-key 7 «0236035F0A1F1B5A»
!
tacacs-server host 10.213.1.5 key 7 «02050D480809»
tacacs-server host 10.213.1.9 port 49 timeout 5 key «tac-host-plain»
tacacs-server key 7 «13061E010803557878»
radius-server host 10.213.1.10 auth-port 1812 acct-port 1813 key 7 «070C285F4D06»
radius-server key 0 «rad-global-key»
tacacs server ISE
 address ipv4 10.213.1.11
 key 7 «00071A150754»
 timeout 5
radius server RAD1
 address ipv4 10.213.1.12 auth-port 1812 acct-port 1813
 key «rad-server-plain»
 pac key 7 «1234ABCDEF0987»
!
key chain EIGRP-KEYS
 key 1
  key-string 7 «110A1016141D5A5E57»
  cryptographic-algorithm hmac-sha-256
 key 2
  key-string «chain-plain-key»
!
interface GigabitEthernet0/1
 description password reset portal uplink (secret lab)
 ip address 10.0.0.1 255.255.255.252
 ip ospf authentication message-digest
 ip ospf message-digest-key 1 md5 7 «0822455D0A16»
 ip ospf authentication-key 7 «13351601181B0B382F»
 standby 1 ip 10.0.0.3
 standby 1 authentication md5 key-string 7 «01100F175804»
 standby 2 authentication md5 key-chain HSRP-KEYS
 standby 3 authentication «hsrptxt1»
 vrrp 4 authentication text «vrrptxt1»
 glbp 5 authentication md5 key-string «glbp-md5-key»
!
interface Serial0/0
 encapsulation ppp
 ppp chap hostname core1
 ppp chap password 7 «094F471A1A0A»
 ppp pap sent-username core1 password 0 «pap-plain-pw»
!
interface Tunnel0
 isis password «isis-if-pw»
 ipv6 ospf authentication ipsec spi 256 md5 «1234567890ABCDEF1234567890ABCDEF»
!
router ospf 1
 area 0 authentication message-digest
 area 1 virtual-link 10.255.0.9 message-digest-key 1 md5 «vlink-md5-key»
!
router isis CORE
 area-password «isis-area-pw»
 domain-password «isis-domain-pw» authenticate snp validate
!
router bgp 65000
 neighbor 10.255.0.1 remote-as 65000
 neighbor 10.255.0.1 description peer with md5 password
 neighbor 10.255.0.1 password 7 «1511021F0725»
 neighbor EBGP peer-group
 neighbor EBGP password «ebgp group pw»
!
ip access-list extended VTY
 remark secret santa server access
 permit tcp 10.213.0.0 0.0.255.255 any eq 22
!
snmp-server community «c0mmRO-x» RO MGMT
snmp-server community «c0mmRW-y» view FULL RW 10
snmp-server location dc1 row 4 (secret cage)
snmp-server contact noc@example.net
snmp-server host 10.213.1.20 version 2c «c0mmTRAP-z»
snmp-server host 10.213.1.21 informs version 2c «c0mmINF-w» udp-port 162
snmp-server host 10.213.1.22 «c0mmV1-v»
snmp-server host 10.213.1.23 version 3 priv v3monitor
snmp-server user v3monitor NMS v3 auth sha «authPW-v3-1» priv aes 128 «privPW-v3-1»
snmp-server enable traps snmp linkdown linkup
snmp mib community-map «c0mmMAP-u» context VRF-A
!
ntp authenticate
ntp authentication-key 1 md5 «104D000A0618» 7
ntp authentication-key 2 md5 «ntp-plain-key»
ntp trusted-key 1
ntp server 10.213.1.1 key 1
!
crypto key generate rsa modulus 2048
crypto isakmp policy 10
 encr aes 256
 authentication pre-share
crypto isakmp key «isakmp-psk-1» address 192.0.2.1
crypto isakmp key 6 «isakmp-psk-6» address 192.0.2.2 255.255.255.255 no-xauth
crypto isakmp key «isakmp-psk-h» hostname vpn.example.net
crypto keyring KR
 pre-shared-key address 192.0.2.3 key «keyring-psk»
 pre-shared-key hostname peer.example.net key 6 «keyring-psk-h»
crypto ikev2 keyring KR2
 peer P1
  address 192.0.2.4
  pre-shared-key local «ikev2-local-psk»
  pre-shared-key remote 6 «ikev2-remote-psk»
crypto ikev2 profile IKP
 match identity remote address 192.0.2.4 255.255.255.255
 authentication local pre-share key «ikev2-profile-psk»
 authentication remote pre-share
crypto ipsec transform-set TS esp-aes 256 esp-sha-hmac
!
dot11 ssid CORP
 authentication open
 authentication key-management wpa version 2
 wpa-psk ascii 7 «0600002E1D4B1F»
!
archive
 path scp://backup:«archive-url-pw»@192.0.2.9/configs/$h
!
ip ftp username backup
ip ftp password 7 «1511021F07»
ip ssh version 2
ip ssh server algorithm kex ecdh-sha2-nistp256
ip ssh pubkey-chain
  username netops
   key-hash ssh-rsa 5E3F0B1DE6A1A2B3C4D5E6F708192A3B netops@laptop
!
banner motd ^C
Authorized access only. Your password and secret keys are monitored.
^C
!
line con 0
 password 7 «0822455D0A16»
 login
line vty 0 4
 access-class VTY in
 password «vty-plain-pw»
 transport input ssh
!
end
"""

EOS_SAMPLE = r"""! device: leaf1 (vEOS-lab, EOS-4.31.2F)
!
hostname leaf1
!
enable password sha512 «$6$Wm1ZU0ZrJwCjQ3EW$8VsIyLDHnBOAd7ZrEq7Lq0yD3fP2mUOYCvZz0sXhK3Gd0rj1tN5wqYpHtXgUuJ0bKiRmWa9oLc2eSvAf4QyD1»
aaa root secret sha512 «$6$rootsaltrootsalt$Q2w3e4r5t6y7u8i9o0pQ2w3e4r5t6y7u8i9o0pQ2w3e4r5t6y7u8i9o0pQ2w3e4r5t6y7u8i9o0pAbCdEf»
aaa authentication login default group tacacs+ local
aaa authentication policy local allow-nopassword-remote-login
!
username admin privilege 15 role network-admin secret sha512 «$6$adminsalt$Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Ji1Hg0Fe»
username ops secret 0 «ops-plain-secret»
username netops privilege 15 role network-operator nopassword
username deploy ssh-key ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7 deploy@ci
!
management security
   password minimum length 10
   password encryption-key common
   shared secret profile ROTATE
      secret k1 7 «0207165218120E»
!
management ssh
   idle-timeout 60
   key-exchange ecdh-sha2-nistp256
!
tacacs-server host 10.213.1.5 vrf MGMT key 7 «070E234F4F0A1D0A15»
tacacs-server key 7 «1306181F1B0D1C»
radius-server host 10.213.1.6 vrf MGMT key 7 «104D580A061843»
radius-server key 0 «eos-rad-plain»
!
snmp-server community «eosRO-comm» ro MGMT
snmp-server host 10.213.1.20 vrf MGMT version 2c «eosTRAP-comm»
snmp-server user monitor NMS v3 localized 800075eb03 auth sha «0xeosauthlocalized» priv aes «0xeosprivlocalized»
snmp-server location dc1 row 5
!
ntp authentication-key 1 md5 7 «0830495D1D1C»
ntp trusted-key 1
ntp server vrf MGMT 10.213.1.1 key 1 iburst
!
interface Ethernet1
   description to spine1 (key rotated, password in vault)
   ip ospf authentication-key 7 «0E1B1C0A0A»
   ip ospf message-digest-key 1 sha256 7 «0F1E0A0D0B»
   vrrp 1 peer authentication text «vrrp-eos-text»
   vrrp 2 peer authentication ietf-md5 key-string 7 «vrrp-eos-md5»
!
router bgp 65001
   neighbor SPINE peer group
   neighbor SPINE password 7 «eos-bgp-type7»
   neighbor 10.0.0.0 peer group SPINE
!
ip security
   ike policy IKE1
   sa policy SA1
   profile IPSEC1
      ike-policy IKE1
      sa-policy SA1
      shared-key 7 «eos-ipsec-psk»
!
daemon TerminAttr
   exec /usr/bin/TerminAttr -cvaddr=10.213.1.30:9910 -cvauth=key,«cvaas-key-123» -cvvrf=MGMT -taillogs
   no shutdown
!
banner login
Authorized users only. Password attempts are logged.
EOF
!
management api http-commands
   no shutdown
!
end
"""

NXOS_SAMPLE = r"""feature tacacs+
username admin password 5 «$5$KJHDFG$abcdef1234567890abcdef1234567890abcdefgh.AB»  role network-admin
username ops password 5 «$5$QWERTY$zyxwvutsrq»  role network-operator
tacacs-server key 7 "«nxos-tac-key»"
tacacs-server host 10.213.1.5 key 7 "«nxos-tac-host»"
radius-server host 10.213.1.6 key 7 "«nxos-rad-host»" authentication accounting
snmp-server user admin network-admin auth md5 «0x1234abcd» priv «0x5678ef01» localizedkey
snmp-server user ops network-operator auth sha «0xaaaa9999» priv aes-128 «0xbbbb8888» localizedkey
snmp-server community «nxosRO» group network-operator
ntp authentication-key 1 md5 «nxosntp» 7
key chain KC
  key 1
    key-string 7 «nxos-keystring»
interface Vlan10
  description svi (password in vault)
  hsrp 10
    authentication md5 key-string «nxos-hsrp-md5»
    authentication text «nxos-hsrp-txt»
  ip ospf authentication-key 3 «nxos-ospf-ak»
  ip ospf message-digest-key 1 md5 3 «nxos-ospf-md»
router bgp 65000
  neighbor 10.0.0.1
    remote-as 65001
    password 3 «nxos-bgp-pw»
"""

JUNOS_SET_SAMPLE = r"""set version 21.4R3.15
set system host-name edge1
set system root-authentication encrypted-password "«$6$qwertyui$rootHashValue.abcdefghijklmnopqrstuvwxyz0123456789»"
set system root-authentication ssh-rsa "ssh-rsa AAAAB3NzaC1yc2E root@host"
set system login message "Authorized use only - never share your password or secret"
set system login password minimum-length 10
set system login password format sha512
set system login user admin uid 2000
set system login user admin class super-user
set system login user admin authentication encrypted-password "«$6$asdfghjk$adminHashValue.ABCDEFGHIJKLMNOPQRSTUVWXYZ»"
set system tacplus-server 10.213.1.5 secret "«$9$7b-dsYgJDk.5QtacA»"
set system radius-server 10.213.1.6 secret "«$9$Hk5FnCtO1hrradB»"
set access radius-server 10.213.1.7 secret «plain-rad-secret»
set system ntp authentication-key 1 type md5 value "«$9$ntpKEYvalue.ZZ»"
set system ntp trusted-key 1
set system ntp server 10.213.1.1 key 1
set system archival configuration archive-sites "scp://backup@192.0.2.9:/cfg" password "«$9$archPWx1»"
set system archival configuration archive-sites "ftp://backup:«ftp-url-pw»@192.0.2.10/cfg"
set system services ssh root-login deny
set system services ssh key-exchange ecdh-sha2-nistp256
set interfaces ge-0/0/1 description "secret lab uplink"
set snmp location "dc1 row 4"
set snmp community «jnprRO-comm» authorization read-only
set snmp community «jnprRO-comm» clients 10.213.0.0/16
set snmp v3 usm local-engine user nms authentication-sha authentication-key "«$9$snmpAuthK»"
set snmp v3 usm local-engine user nms privacy-aes128 privacy-key "«$9$snmpPrivK»"
set snmp v3 usm local-engine user legacy authentication-md5 authentication-password "«legacy-auth-pw»"
set snmp v3 snmp-community idx1 community-name "«$9$commNameK»"
set snmp trap-group NMS targets 10.213.1.20
set policy-options community CUSTOMERS members 65000:100
set policy-options policy-statement EXPORT term 1 then community add CUSTOMERS
set protocols ospf area 0.0.0.0 interface ge-0/0/0.0 authentication md5 1 key "«$9$ospfMD5k»"
set protocols ospf area 0.0.0.1 interface ge-0/0/1.0 authentication simple-password "«$9$ospfSimpleK»"
set protocols bgp group EBGP authentication-key "«$9$bgpGroupK»"
set protocols bgp group EBGP neighbor 10.0.0.1 authentication-key «plain-bgp-key»
set protocols isis level 2 authentication-key "«$9$isisKeyK»"
set security ike proposal P1 authentication-method pre-shared-keys
set security ike policy IKE-POL mode main
set security ike policy IKE-POL pre-shared-key ascii-text "«$9$ikePskK»"
set security ike policy IKE-HEX pre-shared-key hexadecimal "«$9$ikeHexK»"
set security ipsec vpn V1 manual authentication algorithm hmac-sha1-96 key ascii-text "«$9$manualK»"
set security authentication-key-chains key-chain KC key 0 secret "«$9$kcSecretK»" start-time "2024-1-1.00:00:00 +0000"
set access profile PPP client c1 chap-secret "«$9$chapSecK»"
deactivate snmp community «jnprRO-comm»
"""

JUNOS_CURLY_SAMPLE = r"""version 21.4R3.15;
system {
    host-name edge2;
    root-authentication {
        encrypted-password "«$6$zxcvbnm1$curlyRootHash.0123456789abcdef»"; ## SECRET-DATA
        ssh-rsa "ssh-rsa AAAAB3NzaC1yc2E root@host";
    }
    login {
        message "Never share your password";
        password {
            minimum-length 10;
        }
        user admin {
            uid 2000;
            class super-user;
            authentication {
                encrypted-password "«$6$poiuytre$curlyAdminHash.fedcba9876543210»"; ## SECRET-DATA
            }
        }
    }
    tacplus-server {
        10.213.1.5 secret "«$9$curlyTacK»"; ## SECRET-DATA
    }
    ntp {
        authentication-key 1 type md5 value "«$9$curlyNtpK»"; ## SECRET-DATA
        trusted-key 1;
        server 10.213.1.1 key 1;
    }
    some-future-knob {
        unknown-keyword "«future-secret-value»"; ## SECRET-DATA
    }
}
interfaces {
    ge-0/0/1 {
        description "shared secret lab uplink";
    }
}
snmp {
    location "dc1 row 4";
    community «jnprCurlyRO» {
        authorization read-only;
        clients {
            10.213.0.0/16;
        }
    }
    community «jnprCurlyRW»;
    inactive: community «jnprInactive» {
        authorization read-write;
    }
    trap-group NMS {
        targets {
            10.213.1.20;
        }
    }
}
policy-options {
    community CUSTOMERS members 65000:100;
}
protocols {
    ospf {
        area 0.0.0.0 {
            interface ge-0/0/0.0 {
                authentication {
                    md5 1 key "«$9$curlyOspfK»"; ## SECRET-DATA
                }
            }
        }
    }
    bgp {
        group EBGP {
            authentication-key "«$9$curlyBgpK»"; ## SECRET-DATA
            neighbor 10.0.0.1;
        }
    }
}
security {
    ike {
        policy IKE-POL {
            mode main;
            pre-shared-key ascii-text "«$9$curlyIkeK»"; ## SECRET-DATA
        }
    }
}
"""

LINUX_SAMPLE = r"""# edge: interfaces(5) file used by ifup(8) and ifdown(8)
# Set wpa-psk below; the password lives in the vault
auto lo
iface lo inet loopback

allow-hotplug wlan0
iface wlan0 inet dhcp
    wpa-ssid netops-lab
    wpa-key-mgmt WPA-PSK
    wpa-psk «9f1c0d6e2b7a4c3d»
    wpa-identity alice
    wpa-password «eap-pw-1»
    wpa-private-key /etc/ssl/private/alice.key
    wpa-private-key-passwd «pkey-pw»
    wireless-key1 «wepkey-1»
    wpa-wep-key0 «wepkey-0»

auto wg0
iface wg0 inet static
    address 10.99.0.1/24
    pre-up ip link add dev wg0 type wireguard
    pre-up wg set wg0 private-key /etc/wireguard/wg0.key
    up /usr/local/bin/vpn-helper --user ops --password «cli-flag-pw» --verbose
    up /usr/local/bin/other-helper --secret=«cli-flag-secret»

[Interface]
PrivateKey = «yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=»
[Peer]
PublicKey = HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=
PresharedKey = «FpCyhws9cxwWoV4xELtfJvjJN+zQVRPISllRWgeopVE=»
Endpoint = 192.0.2.50:51820
DB_PASSWORD=«db-pw-1»
export API_TOKEN="«tok-123»"
mysql_root_password: «yaml-pw»
  "password": "«json-pw»",
secret = «ini secret with blanks»
#password=«old-pw»
PasswordAuthentication no
PermitEmptyPasswords no
HostKey /etc/ssh/ssh_host_ed25519_key
PubkeyAuthentication yes
source-directory /etc/network/interfaces.d
root:«$6$rounds=5000$saltsalt$hashhashhashhash»:19000:0:99999:7:::
daemon:*:19000:0:99999:7:::
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
locked:!«$6$salt2$hash2hash2»:19000:0:99999:7:::
legacy:«$1$oldsalt$oldhasholdhash»:1001:1001:Legacy:/home/legacy:/bin/sh
"""

# An unknown platform: a bit of everything, and a vendor the rules never heard of.
GENERIC_SAMPLE = r"""hostname fw1
enable secret 5 «$1$gen1$abcdefghijklmnopqrstu»
snmp-server community «genRO-comm» RO
tacacs-server host 10.213.1.5 key 7 «gen-tac-key»
set system login user admin authentication encrypted-password "«$6$gensalt$genhash»"
set snmp community «genJunosComm» authorization read-only
config system admin
    edit "admin"
        set password ENC «SH2gen-fortios-hash»
        set psksecret ENC «gen-fortios-psk»
    next
end
admin_password=«gen-env-pw»
    wpa-psk «gen-wpa-psk»
root:«$6$gensalt2$genhash2»:19000:0:99999:7:::
url ftp://user:«gen-url-pw»@192.0.2.1/x
"""

SAMPLES = {
    "cisco_ios": [IOS_SAMPLE],
    "arista_eos": [EOS_SAMPLE],
    "cisco_nxos": [NXOS_SAMPLE],
    "juniper_junos": [JUNOS_SET_SAMPLE, JUNOS_CURLY_SAMPLE],
    "linux": [LINUX_SAMPLE],
    "frobnitz_os": [GENERIC_SAMPLE],
}
SAMPLE_CASES = [(platform, i) for platform, texts in SAMPLES.items() for i in range(len(texts))]


def unmark(sample: str) -> tuple[str, list[str]]:
    return sample.replace("«", "").replace("»", ""), re.findall(r"«(.*?)»", sample)


@pytest.mark.parametrize("platform, index", SAMPLE_CASES)
def test_samples_lose_every_secret_and_keep_everything_else(platform, index):
    text, secrets = unmark(SAMPLES[platform][index])
    assert secrets and all(s in text for s in secrets)
    out = redact(platform, text)
    for secret in secrets:
        assert secret not in out, f"{secret!r} survived redaction"
    assert MARKER in out
    assert len(out.split("\n")) == len(text.split("\n"))
    assert redact(platform, out) == out
    assert redact(platform, text) == out
    # Lines without a secret are untouched; lines with one keep what precedes the secret (the keyword).
    marked_lines = SAMPLES[platform][index].split("\n")
    for before, after, marked in zip(text.split("\n"), out.split("\n"), marked_lines):
        if "«" not in marked:
            assert after == before
        else:
            assert MARKER in after and after.startswith(marked.split("«")[0])


def test_marker_is_fixed():
    assert MARKER == "<redacted>"
    assert redact("cisco_ios", "enable secret 9 $9$a$b\n") == "enable secret 9 <redacted>\n"


@pytest.mark.parametrize("platform, line, expected", [
    # type, keyword and the rest of the line stay; quoted values stay quoted
    ("cisco_ios", "username u privilege 15 secret 9 $9$x$y", "username u privilege 15 secret 9 <redacted>"),
    ("cisco_nxos", 'tacacs-server key 7 "abc"', 'tacacs-server key 7 "<redacted>"'),
    ("cisco_nxos", "username a password 5 $5$s$h role network-admin",
     "username a password 5 <redacted> role network-admin"),
    ("arista_eos", "ntp authentication-key 1 md5 7 0830495D1D1C", "ntp authentication-key 1 md5 7 <redacted>"),
    ("cisco_ios", "ntp authentication-key 1 md5 104D000A0618 7", "ntp authentication-key 1 md5 <redacted> 7"),
    ("juniper_junos", 'set system ntp authentication-key 1 type md5 value "$9$x"',
     'set system ntp authentication-key 1 type md5 value "<redacted>"'),
    ("linux", "locked:!$6$s$h:19000:0:99999:7:::", "locked:!<redacted>:19000:0:99999:7:::"),
    ("linux", '  "password": "x",', '  "password": "<redacted>",'),
    ("linux", "password='a b' # old", "password='<redacted>' # old"),
    ("linux", "password='a',b", "password=<redacted>"),
    # judgement calls: names of keys, key ids, prose, public keys are not secrets
    ("cisco_ios", "crypto key generate rsa modulus 2048", "crypto key generate rsa modulus 2048"),
    ("cisco_ios", " description reset password via portal", " description reset password via portal"),
    ("arista_eos", "   key-exchange ecdh-sha2-nistp256", "   key-exchange ecdh-sha2-nistp256"),
    ("juniper_junos", "set policy-options community C members 65000:1",
     "set policy-options community C members 65000:1"),
    ("linux", "PublicKey = HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=",
     "PublicKey = HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw="),
    ("linux", "# the password lives in the vault", "# the password lives in the vault"),
    # a hash is redacted even in prose
    ("cisco_ios", " description old hash $1$ab$cdefgh", " description old hash <redacted>"),
])
def test_single_lines(platform, line, expected):
    assert redact(platform, line) == expected


def test_unclosed_banner_does_not_hide_the_rest():
    text = "banner motd ^C\nhello\nenable secret 5 $1$a$b\nsnmp-server community c0mm RO\n"
    out = redact("cisco_ios", text)
    assert "c0mm" not in out and "$1$a$b" not in out


def test_empty_and_secret_free_text_is_unchanged():
    for platform in ("cisco_ios", "arista_eos", "juniper_junos", "linux", "other"):
        assert redact(platform, "") == ""
        assert redact(platform, "hostname r1\n\n!\n") == "hostname r1\n\n!\n"


# --- the simulator -------------------------------------------------------------------------------

SIM_PLATFORMS = ["cisco_ios", "arista_eos", "juniper_junos", "linux"]


@pytest.mark.parametrize("platform", SIM_PLATFORMS)
def test_simulated_configs_hold_secrets_and_redaction_removes_them(platform):
    for hostname in ("R1", "edge-7"):
        secrets = simulated_secrets(platform, hostname)
        first = normalize_config(platform, running_config(platform, hostname, generated_body(platform, hostname),
                                                          now=1_700_000_000))
        second = normalize_config(platform, running_config(platform, hostname, generated_body(platform, hostname),
                                                           now=1_800_000_000.5))
        assert all(s in first for s in secrets)
        stored = redact(platform, first)
        for secret in secrets:
            assert secret not in stored
        assert MARKER in stored
        assert redact(platform, second) == stored  # same hash on every run
        assert redact(platform, stored) == stored
        assert len(stored.split("\n")) == len(first.split("\n"))


def test_simulated_secrets_differ_per_device_but_not_per_call():
    assert simulated_secrets("cisco_ios", "R1") == simulated_secrets("cisco_ios", "R1")
    assert set(simulated_secrets("cisco_ios", "R1")) != set(simulated_secrets("cisco_ios", "R2"))


# --- generated configurations --------------------------------------------------------------------
#
# A configuration is a list of chunks, each benign or a secret template; a template's {0}/{1} get
# random secret values. Every chunk starts at the top level, so a template's block context (the
# `tacacs server` a ` key` line is in) is its own. Expected output: the same chunks with each value
# replaced by the marker (a value standing alone that is a whole quoted string keeps its quotes).

BENIGN = {
    "cisco": [
        ["hostname R1"], ["!"], ["service password-encryption"], ["no service password-encryption"],
        ["security passwords min-length 10"], ["password encryption aes"], ["aaa new-model"],
        ["aaa authentication login default group tacacs+ local"], ["crypto key generate rsa modulus 2048"],
        ["ip ssh version 2"], ["ip ssh server algorithm kex ecdh-sha2-nistp256"],
        ["snmp-server location dc1 row 4 secret cage"], ["snmp-server enable traps snmp linkdown linkup"],
        ["snmp-server contact noc@example.net"], ["snmp-server host 10.213.1.23 version 3 priv v3monitor"],
        ["key chain OSPF-KEYS", " key 1", "  cryptographic-algorithm hmac-sha-256"],
        ["interface GigabitEthernet0/1", " description password reset portal uplink",
         " ip ospf authentication message-digest", " standby 1 authentication md5 key-chain HSRP-KEYS",
         " no shutdown"],
        ["router ospf 1", " area 0 authentication message-digest"],
        ["ip access-list extended X", " remark allow secret santa server", " permit tcp any any eq 22"],
        ["line vty 0 4", " login local", " transport input ssh"],
        ["banner motd ^C", "Authorized access only. Your password is monitored.", "^C"],
        ["tacacs server ISE", " address ipv4 10.1.1.1", " timeout 5"],
        ["aaa group server tacacs+ ISE-GROUP", " server name ISE"],
        ["ntp authenticate"], ["ntp trusted-key 1"], ["ntp server 10.213.1.1 key 1"],
        ["crypto isakmp policy 10", " authentication pre-share", " encr aes 256"],
        ["crypto ipsec transform-set TS esp-aes 256 esp-sha-hmac"],
        ["username admin privilege 15 nopassword"],
        ["router bgp 65000", " neighbor 10.0.0.1 remote-as 65001", " neighbor 10.0.0.1 description md5 password peer"],
        ["ip ssh pubkey-chain", "  username netops", "   key-hash ssh-rsa 5E3F0B1DE6A1 netops@laptop"],
        ["management ssh", "   key-exchange ecdh-sha2-nistp256"],
        ["management security", "   password minimum length 10", "   password encryption-key common"],
        ["daemon TerminAttr", "   exec /usr/bin/TerminAttr -cvaddr=10.1.1.1:9910 -cvauth=token,/tmp/token",
         "   no shutdown"],
    ],
    "junos": [
        ["set system host-name R1"], ['set system login message "Do not share your password"'],
        ["set system login password minimum-length 10"], ["set system login password format sha512"],
        ["set system services ssh root-login deny"], ["set system services ssh key-exchange ecdh-sha2-nistp256"],
        ["set policy-options community CUST members 65000:100"],
        ["set policy-options policy-statement EXPORT term 1 then community add CUST"],
        ['set interfaces ge-0/0/1 description "secret lab uplink"'],
        ["set security ike proposal P authentication-method pre-shared-keys"],
        ["set system ntp server 10.213.1.1 key 1"], ["set system ntp trusted-key 1"],
        ['set snmp location "dc1 row 4"'], ["set snmp trap-group NMS targets 10.213.1.20"],
        ['set system root-authentication ssh-rsa "ssh-rsa AAAAB3Nza admin@host"'],
        ["policy-options {", "    community CUST members 65000:100;", "}"],
        ["system {", "    host-name R1;", "    login {", "        password {", "            minimum-length 10;",
         "        }", "    }", "}"],
        ["interfaces {", "    ge-0/0/1 {", '        description "secret lab uplink";', "    }", "}"],
        ["snmp {", '    location "dc1";', "    trap-group NMS {", "        targets {", "            10.213.1.20;",
         "        }", "    }", "}"],
    ],
    "linux": [
        ["auto lo"], ["iface lo inet loopback"], ["iface eth0 inet static"], ["    address 10.0.0.1/30"],
        ["    gateway 10.0.0.2"], ["    wpa-ssid CORP"], ["    wpa-key-mgmt WPA-PSK"], ["    wpa-identity alice"],
        ["# Set wpa-psk below; the password lives in the vault"], ["    dns-nameservers 10.213.1.53"],
        ["source /etc/network/interfaces.d/*"], ["    pre-up /sbin/ip link set dev $IFACE up"],
        ["PublicKey = HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw="], ["    bond-mode 802.3ad"], [""],
        ["nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin"], ["daemon:*:19000:0:99999:7:::"],
        ["HostKey /etc/ssh/ssh_host_ed25519_key"], ["PubkeyAuthentication yes"], ["PasswordAuthentication no"],
        ["    wpa-private-key /etc/ssl/private/alice.key"],
    ],
}

# (lines, value kinds); kinds: tok = any printable non-space token, jq = inside Junos quotes,
# jw = a Junos word, url = a URL password, shadow = a shadow password field, lsp = a value after a
# blank-separated Linux option, lq = inside shell double quotes.
SECRETS = {
    "cisco": [
        (["enable secret 9 {0}"], "tok"), (["enable password 7 {0}"], "tok"),
        (["enable secret level 15 5 {0}"], "tok"),
        (["username netops privilege 15 secret 9 {0}"], "tok"), (["username backup password 7 {0}"], "tok"),
        (["username ro privilege 1 password 0 {0}"], "tok"),
        (["snmp-server community {0} RO MGMT"], "tok"), (["snmp-server community {0} view V1 RW 10"], "tok"),
        (["snmp-server host 10.213.1.20 version 2c {0}"], "tok"), (["snmp-server host 10.213.1.21 traps {0}"], "tok"),
        (["snmp-server user monitor NMS v3 auth sha {0} priv aes 128 {1}"], "tok"),
        (["tacacs-server key 7 {0}"], "tok"), (["tacacs-server host 10.1.1.5 key 7 {0}"], "tok"),
        (["tacacs-server host 10.1.1.6 port 49 timeout 5 key {0}"], "tok"),
        (["radius-server key 0 {0}"], "tok"),
        (["radius-server host 10.1.1.7 auth-port 1812 acct-port 1813 key 7 {0}"], "tok"),
        (["tacacs server ISE", " address ipv4 10.1.1.8", " key 7 {0}"], "tok"),
        (["radius server RAD1", " address ipv4 10.1.1.9 auth-port 1812 acct-port 1813", " key {0}"], "tok"),
        (["radius server RAD2", " pac key 7 {0}"], "tok"),
        (["aaa group server tacacs+ TAC", " server-private 10.1.1.10 key 7 {0}"], "tok"),
        (["key chain EIGRP-KEYS", " key 1", "  key-string 7 {0}"], "tok"),
        (["router bgp 65000", " neighbor 10.0.0.1 remote-as 65001", " neighbor 10.0.0.1 password 7 {0}"], "tok"),
        (["router bgp 65000", " neighbor PEERS password {0}"], "tok"),
        (["interface GigabitEthernet0/2", " ip ospf authentication-key 7 {0}",
          " ip ospf message-digest-key 1 md5 7 {1}"], "tok"),
        (["interface GigabitEthernet0/3", " ip ospf message-digest-key 2 md5 {0}"], "tok"),
        (["interface Vlan10", " standby 1 authentication md5 key-string 7 {0}", " standby 2 authentication {1}"],
         "tok"),
        (["interface Vlan20", " vrrp 1 authentication text {0}"], "tok"),
        (["interface Serial0/0", " ppp chap password 7 {0}", " ppp pap sent-username u1 password 0 {1}"], "tok"),
        (["interface Tunnel0", " isis password {0}"], "tok"),
        (["router isis", " area-password {0}", " domain-password {1}"], "tok"),
        (["crypto isakmp key {0} address 192.0.2.1"], "tok"),
        (["crypto isakmp key 6 {0} address 192.0.2.2 255.255.255.255"], "tok"),
        (["crypto keyring KR", " pre-shared-key address 192.0.2.3 key {0}"], "tok"),
        (["crypto ikev2 keyring KR2", " peer P1", "  address 192.0.2.4", "  pre-shared-key local {0}",
          "  pre-shared-key remote {1}"], "tok"),
        (["crypto ikev2 profile IKP", " authentication local pre-share key {0}"], "tok"),
        (["dot11 ssid CORP", " authentication key-management wpa", " wpa-psk ascii 7 {0}"], "tok"),
        (["line con 0", " password 7 {0}"], "tok"), (["line vty 0 4", " password {0}"], "tok"),
        (["ip ftp password 7 {0}"], "tok"),
        (["archive", " path ftp://backup:{0}@192.0.2.9/cfg"], "url"),
        (["daemon TerminAttr", "   exec /usr/bin/TerminAttr -cvauth=key,{0} -cvvrf=MGMT"], "cv"),
    ],
    "ios": [
        (["ntp authentication-key 1 md5 {0} 7"], "tok"),
        (["ntp authentication-key 2 md5 {0}"], "tok"),
    ],
    "eos": [
        (["enable password sha512 {0}"], "tok"), (["aaa root secret sha512 {0}"], "tok"),
        (["username admin privilege 15 role network-admin secret sha512 {0}"], "tok"),
        (["username ops secret 0 {0}"], "tok"),
        (["ntp authentication-key 1 md5 7 {0}"], "tok"),
        (["snmp-server user monitor NMS v3 localized 800000ab auth sha {0} priv aes {1}"], "tok"),
        (["snmp-server host 10.1.1.1 vrf MGMT version 2c {0}"], "tok"),
        (["ip security", "   profile P", "      shared-key 7 {0}"], "tok"),
        (["interface Ethernet1", "   vrrp 1 peer authentication text {0}"], "tok"),
        (["tacacs-server host 10.213.1.5 vrf MGMT key 7 {0}"], "tok"),
    ],
    "junos": [
        (['set system root-authentication encrypted-password "{0}"'], "jq"),
        (['set system login user admin authentication encrypted-password "{0}"'], "jq"),
        (['set system tacplus-server 10.1.1.5 secret "{0}"'], "jq"),
        (['set system radius-server 10.1.1.6 secret "{0}"'], "jq"),
        (["set access radius-server 10.1.1.7 secret {0}"], "jw"),
        (['set protocols bgp group EBGP authentication-key "{0}"'], "jq"),
        (["set protocols bgp group EBGP neighbor 10.0.0.1 authentication-key {0}"], "jw"),
        (['set protocols ospf area 0.0.0.0 interface ge-0/0/0.0 authentication md5 1 key "{0}"'], "jq"),
        (['set protocols ospf area 0.0.0.0 interface ge-0/0/1.0 authentication simple-password "{0}"'], "jq"),
        (['set system ntp authentication-key 1 type md5 value "{0}"'], "jq"),
        (['set security ike policy IKE-POL pre-shared-key ascii-text "{0}"'], "jq"),
        (['set security ike policy IKE-HEX pre-shared-key hexadecimal "{0}"'], "jq"),
        (["set snmp community {0} authorization read-only"], "jw"),
        (["set snmp community {0} clients 10.0.0.0/8"], "jw"),
        (['set snmp v3 usm local-engine user nms authentication-sha authentication-key "{0}"'], "jq"),
        (['set snmp v3 usm local-engine user nms privacy-aes128 privacy-key "{0}"'], "jq"),
        (['set snmp v3 snmp-community idx1 community-name "{0}"'], "jq"),
        (['set security authentication-key-chains key-chain KC key 0 secret "{0}" '
          'start-time "2024-1-1.00:00:00 +0000"'], "jq"),
        (['set system archival configuration archive-sites "scp://backup@192.0.2.9:/cfg" password "{0}"'], "jq"),
        (['set protocols isis level 2 authentication-key "{0}"'], "jq"),
        (["system {", "    root-authentication {", '        encrypted-password "{0}"; ## SECRET-DATA', "    }", "}"],
         "jq"),
        (["system {", "    tacplus-server {", '        10.1.1.5 secret "{0}"; ## SECRET-DATA', "    }", "}"], "jq"),
        (["system {", "    ntp {", '        authentication-key 1 type md5 value "{0}"; ## SECRET-DATA',
          "        trusted-key 1;", "    }", "}"], "jq"),
        (["system {", "    future {", '        unknown-knob "{0}"; ## SECRET-DATA', "    }", "}"], "jq"),
        (["snmp {", "    community {0} {", "        authorization read-only;", "    }", "}"], "jw"),
        (["snmp {", "    community {0};", "}"], "jw"),
        (["protocols {", "    bgp {", "        group EBGP {", '            authentication-key "{0}"; ## SECRET-DATA',
          "        }", "    }", "}"], "jq"),
        (["protocols {", "    ospf {", "        area 0.0.0.0 {", "            interface ge-0/0/0.0 {",
          "                authentication {", '                    md5 1 key "{0}"; ## SECRET-DATA',
          "                }", "            }", "        }", "    }", "}"], "jq"),
        (["security {", "    ike {", "        policy IKE-POL {",
          '            pre-shared-key ascii-text "{0}"; ## SECRET-DATA', "        }", "    }", "}"], "jq"),
    ],
    "linux": [
        (["    wpa-psk {0}"], "lsp"), (["    wpa-password {0}"], "lsp"), (["    wireless-key1 {0}"], "lsp"),
        (["    wpa-wep-key0 {0}"], "lsp"), (["    wpa-private-key-passwd {0}"], "lsp"),
        (["password={0}"], "lv"), (["DB_PASSWORD={0}"], "lv"), (['export API_TOKEN="{0}"'], "lq"),
        (["secret = {0}"], "lv"), (["  password: {0}"], "lv"), (["PrivateKey = {0}"], "lv"),
        (["PresharedKey = {0}"], "lv"), (["#password={0}"], "lv"),
        (["    up /usr/local/bin/helper --password {0} --verbose"], "lv"),
        (["root:{0}:19000:0:99999:7:::"], "shadow"),
        (["legacy:{0}:1001:1001:Legacy:/home/legacy:/bin/sh"], "shadow"),
    ],
}

BENIGN["ios"] = BENIGN["eos"] = []

FAMILY_CHUNKS = {
    "cisco_ios": ("cisco", ["cisco", "ios"]),
    "arista_eos": ("cisco", ["cisco", "eos"]),
    "juniper_junos": ("junos", ["junos"]),
    "linux": ("linux", ["linux"]),
}

_SPLIT = re.compile(r"[\s\"';:,=@/{}]+")
# Words the templates are made of, and words the rules treat specially: a secret equal to one of
# them would make "the value does not appear as a token" meaningless (or be genuinely ambiguous,
# like a password "7" right after "password").
RESERVED = {w for groups in (BENIGN, {k: [t for t, _ in v] for k, v in SECRETS.items()})
            for chunks in groups.values() for chunk in chunks for line in chunk
            for w in _SPLIT.split(line) + line.split() if w}
RESERVED |= {str(i) for i in range(100)} | {f"{i:02d}" for i in range(10)}
RESERVED |= {"8a", "sha512", "sha256", "description", "remark", "location", "contact", "message", "announcement",
             "encryption", "encryption-key", "minimum", "minimum-length", "restriction", "policy", "profile",
             "format", "text", "ietf-md5", "text-md5", "key-chain", "type", "value", "informs", "traps", "vrf",
             "version", "address", "hostname", "local", "remote", "peer", "EOF", "^C", "ENC"}

PRINTABLE = "".join(c for c in string.printable if not c.isspace())


def _value(kind: str) -> st.SearchStrategy[str]:
    alphabet = {
        "tok": PRINTABLE,
        "cv": PRINTABLE.replace(",", ""),
        "jq": PRINTABLE.replace('"', "").replace("\\", ""),
        "jw": "".join(c for c in PRINTABLE if c not in '"\\;{}'),
        "url": string.ascii_letters + string.digits + "!$%&*+-._~",
        "shadow": PRINTABLE.replace(":", ""),
        "lsp": PRINTABLE,
        "lv": PRINTABLE,
        "lq": PRINTABLE.replace('"', "").replace("\\", "").replace("$", "").replace("`", ""),
    }[kind]
    values = st.text(alphabet=alphabet, min_size=1, max_size=24).filter(
        lambda v: v not in RESERVED and MARKER not in v and "redacted" not in v)
    if kind == "shadow":  # empty, "x", "*", "!" are placeholders, not passwords; a leading "!" is a lock
        values = values.filter(lambda v: not re.fullmatch(r"[!*x]*|\*LK\*|\*NP\*", v) and not v.startswith("!"))
    if kind == "lsp":  # "wpa-psk =x" reads as an assignment of "x"
        values = values.filter(lambda v: v[0] not in "=:")
    if kind in ("lsp", "lv"):  # a value starting with a quote is read as a quoted string (shell, INI, YAML)
        values = values.filter(lambda v: v[0] not in "\"'")
    return values


_WHOLE_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"|\'[^\']*\'')


def marker_for(value: str) -> str:
    return value[0] + MARKER + value[0] if len(value) >= 2 and _WHOLE_QUOTED.fullmatch(value) else MARKER


def fill(lines: list[str], values: list[str], how) -> list[str]:
    return [re.sub(r"\{(\d)\}", lambda m: how(values[int(m.group(1))]), line) for line in lines]


@st.composite
def configurations(draw, groups: list[str]):
    """(config lines, expected redacted lines, secret values)."""
    benign = [c for g in groups for c in BENIGN[g]]
    secret = [t for g in groups for t in SECRETS[g]]
    chunks = draw(st.lists(st.one_of(st.tuples(st.just("b"), st.sampled_from(benign)),
                                     st.tuples(st.just("s"), st.sampled_from(secret))), min_size=1, max_size=12))
    lines: list[str] = []
    expected: list[str] = []
    values: list[str] = []
    for kind, chunk in chunks:
        if kind == "b":
            lines += chunk
            expected += chunk
            continue
        template, value_kind = chunk
        count = len(set(re.findall(r"\{(\d)\}", "\n".join(template))))
        vals = [draw(_value(value_kind)) for _ in range(count)]
        lines += fill(template, vals, lambda v: v)
        # inside the template's own quotes (or a shadow field) a value is never "a quoted value"
        plain = value_kind in ("jq", "lq", "shadow")
        expected += fill(template, vals, (lambda v: MARKER) if plain else marker_for)
        values += vals
    return lines, expected, values


def _tokens(text: str) -> set[str]:
    return set(text.split()) | set(_SPLIT.split(text))


FAST = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("platform", list(FAMILY_CHUNKS))
def test_generated_configs_lose_every_secret(platform):
    _, groups = FAMILY_CHUNKS[platform]

    @FAST
    @given(configurations(groups))
    def check(case):
        lines, expected, values = case
        text = "\n".join(lines) + "\n"
        out = redact(platform, text)
        assert out.split("\n") == expected + [""]  # benign lines unchanged, each value replaced by the marker
        tokens = _tokens(out)
        for value in values:
            assert value not in tokens
        assert redact(platform, text) == out
        assert redact(platform, out) == out

    check()


def test_generated_configs_of_an_unknown_platform_lose_every_secret():
    """Unknown platforms may redact more than needed, but never leak and stay idempotent."""

    @FAST
    @given(configurations(["cisco", "ios", "eos", "junos", "linux"]))
    def check(case):
        lines, _, values = case
        text = "\n".join(lines) + "\n"
        out = redact("some_other_os", text)
        assert len(out.split("\n")) == len(text.split("\n"))
        tokens = _tokens(out)
        for value in values:
            assert value not in tokens
        assert redact("some_other_os", text) == out
        assert redact("some_other_os", out) == out

    check()


@FAST
@given(platform=st.sampled_from(["cisco_ios", "arista_eos", "cisco_nxos", "juniper_junos", "linux", "x"]),
       text=st.text(alphabet=PRINTABLE + " \n\t", max_size=400))
def test_any_text_keeps_its_lines_and_redacting_twice_changes_nothing(platform, text):
    out = redact(platform, text)
    assert out.count("\n") == text.count("\n")
    assert redact(platform, out) == out


def test_default_snmp_communities_stay_visible_for_compliance():
    assert redact("cisco_ios", "snmp-server community public RO\n") == "snmp-server community public RO\n"
    assert redact("arista_eos", "snmp-server community private rw\n") == "snmp-server community private rw\n"
    assert redact("cisco_ios", "snmp-server community publicity RO\n") == "snmp-server community <redacted> RO\n"
