"""The device inventory: list, show, add, remove, import (admin), and back up one device now."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from netjobs.api import auth
from netjobs.api.deps import acting, celery, plain
from netjobs.api.errors import invalid
from netjobs.services.tokens import TokenUser

router = APIRouter(prefix="/devices", tags=["devices"])

NAME = Path(..., min_length=1, max_length=255, description="the device's name")


class AddDevice(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., max_length=255)
    address: str = Field(..., max_length=255, description="IP address or DNS name")
    platform: str = Field(..., max_length=64, description="cisco_ios, arista_eos, juniper_junos, linux, ...")
    port: int = Field(22, ge=1, le=65535)
    site: str | None = Field(None, max_length=255)
    tags: list[str] = Field(default_factory=list)
    credentials_ref: str = Field("default", max_length=64)
    enabled: bool = True


class ImportDevices(BaseModel):
    model_config = ConfigDict(extra="forbid")

    content: str = Field(..., description="the CSV or YAML text, as `netjobs import FILE` reads it")
    format: Literal["csv", "yaml"]
    prune: bool = Field(False, description="also remove the devices the text does not list")
    source: str = Field("api", max_length=255, description="a name for the text in messages and the audit log")


class Backup(BaseModel):
    model_config = ConfigDict(extra="forbid")

    now: bool = Field(False, description="ahead of every backup waiting in the queue (urgent priority)")


@router.get("", summary="Devices, by name")
def list_devices(site: str | None = Query(None, max_length=255), tag: str | None = Query(None, max_length=64),
                 enabled: bool | None = Query(None), user: TokenUser = Depends(auth.viewer)) -> list[dict]:
    from netjobs.services.devices import list_devices as read

    return plain(read(site=site, tag=tag, enabled=enabled))


@router.get("/{name}", summary="One device")
def get_device(name: str = NAME, user: TokenUser = Depends(auth.viewer)) -> dict:
    from netjobs.services.devices import get_device as read

    return plain(read(name))


@router.post("", status_code=201, summary="Add a device (admin)")
def add_device(body: AddDevice, user: TokenUser = Depends(auth.admin)) -> dict:
    from netjobs.services.devices import add_device as add

    with acting(user), invalid("body"):
        return plain(add(body.name, body.address, body.platform, port=body.port, site=body.site,
                         tags=tuple(body.tags), credentials_ref=body.credentials_ref, enabled=body.enabled))


@router.delete("/{name}", summary="Remove a device with its snapshots and results (admin)")
def remove_device(name: str = NAME, user: TokenUser = Depends(auth.admin)) -> dict:
    from netjobs.services.devices import remove_device as remove

    with acting(user):
        remove(name)
    return {"name": name, "removed": True}


@router.post("/import", summary="Import devices from CSV or YAML text (admin); bad rows come back with their line")
def import_devices(body: ImportDevices, user: TokenUser = Depends(auth.admin)) -> dict:
    from netjobs.services.inventory import check_size, import_inventory

    with invalid("body.content"):
        check_size(body.content, body.source)
    with acting(user), invalid("body.content"):
        return plain(import_inventory(body.content, body.format, source=body.source, prune=body.prune))


@router.post("/{name}/backup", status_code=202,
             summary="Back up the device's configuration (operator); now: ahead of the queue, like `backup --now`")
def backup(name: str = NAME, body: Backup | None = None, user: TokenUser = Depends(auth.operator)) -> dict:
    from netjobs.queues import PRIORITIES
    from netjobs.services.devices import get_device as read
    from netjobs.services.jobs import submit_job

    body = body or Backup()
    read(name)  # an unknown name is a 404 here, not a failed job later
    with acting(user):
        submitted = submit_job(celery(), "netjobs.backup.device", {"device": name},
                               priority=PRIORITIES["urgent"] if body.now else None)
    return plain(submitted)
