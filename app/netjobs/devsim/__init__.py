"""A device simulator that speaks real SSH, for tests, benchmarks and labs.

``python -m netjobs.devsim --listen 127.0.0.1 --port 2222 --platform cisco_ios --username U --password P``
serves an interactive CLI (prompts, enable, paging commands, ``show running-config``) close enough
to the real platforms that Netmiko drives it unchanged. See ``python -m netjobs.devsim --help``.
"""

from netjobs.devsim.server import Fleet, load_host_key, read_authorized_keys
from netjobs.devsim.shells import FAIL_MODES, PLATFORMS, DeviceSpec

__all__ = ["FAIL_MODES", "PLATFORMS", "DeviceSpec", "Fleet", "load_host_key", "read_authorized_keys"]
