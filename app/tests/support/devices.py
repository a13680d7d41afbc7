"""Simulated SSH devices (netjobs.devsim, in this process) and device rows for backup tests."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import pytest

from netjobs.devsim import DeviceSpec, Fleet

_names = itertools.count(1)


@dataclass
class SimDevice:
    name: str
    port: int
    spec: DeviceSpec

    @property
    def config_file(self) -> Path:
        assert self.spec.config_file is not None
        return self.spec.config_file

    def set_body(self, text: str) -> None:
        """Change the configuration the device shows from now on."""
        self.config_file.write_text(text)


class SimLab:
    """A fleet of simulated devices sharing the session's device credentials."""

    def __init__(self, fleet: Fleet, workdir: Path, username: str, password: str):
        self.fleet = fleet
        self.workdir = workdir
        self.username = username
        self.password = password

    def device(self, platform: str = "cisco_ios", fail_mode: str = "none", name: str | None = None,
               password: str | None = None) -> SimDevice:
        name = name or f"sim-{platform.split('_')[0]}-{next(_names)}"
        spec = DeviceSpec(platform=platform, hostname=name, username=self.username,
                          password=password or self.password, config_file=self.workdir / f"{name}.cfg",
                          fail_mode=fail_mode)
        return SimDevice(name, self.fleet.add(spec), spec)


def add_device_row(engine, device: SimDevice | None = None, *, name: str | None = None, port: int = 22,
                   platform: str = "cisco_ios", site: str | None = None, tags: list[str] | None = None,
                   enabled: bool = True, credentials_ref: str = "default", host: str = "127.0.0.1") -> int:
    """Insert a devices row (inventory services belong to another module) and return its id."""
    from sqlalchemy import insert

    from netjobs.db.models import Device

    if device is not None:
        name, port, platform = device.name, device.port, device.spec.platform
    with engine.begin() as conn:
        return conn.execute(
            insert(Device).values(name=name, mgmt_address=host, port=port, platform=platform, site=site,
                                  tags=tags or [], enabled=enabled, credentials_ref=credentials_ref)
            .returning(Device.id)
        ).scalar_one()


@pytest.fixture(scope="module")
def sim_lab(netjobs_env, tmp_path_factory):
    """Simulated devices on 127.0.0.1 that accept the session's NETJOBS_DEVICE_* credentials."""
    with Fleet() as fleet:
        yield SimLab(fleet, tmp_path_factory.mktemp("devsim"), netjobs_env["NETJOBS_DEVICE_USERNAME"],
                     netjobs_env["NETJOBS_DEVICE_PASSWORD"])
