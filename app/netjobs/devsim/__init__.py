"""A device simulator that speaks real SSH, for tests, benchmarks and labs.

``python -m netjobs.devsim --listen 127.0.0.1 --port 2222 --platform cisco_ios --username U --password P``
serves an interactive CLI (prompts, enable, paging commands, ``show running-config``) close enough
to the real platforms that Netmiko drives it unchanged. See ``python -m netjobs.devsim --help``.

Devices answer instantly unless given a :class:`Realism` (``--realistic``): then they have login
banners, WAN-like latency, paging, configurations of thousands of lines, and optionally a share
of slow, flaky and unreachable devices.
"""

from netjobs.devsim.realism import Latency, Realism
from netjobs.devsim.server import Fleet, load_host_key, read_authorized_keys
from netjobs.devsim.shells import FAIL_MODES, PLATFORMS, DeviceSpec

__all__ = ["FAIL_MODES", "PLATFORMS", "DeviceSpec", "Fleet", "Latency", "Realism", "load_host_key",
           "read_authorized_keys"]
