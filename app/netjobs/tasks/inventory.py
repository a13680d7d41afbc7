"""Inventory import tasks (heavy queue). Thin wrappers over :mod:`netjobs.services.inventory`."""

from __future__ import annotations

from netjobs.celery_app import app
from netjobs.errors import ValidationError
from netjobs.services.inventory import FORMATS, check_size, detect_format, import_inventory, read_inventory_file
from netjobs.tasks.base import NetjobsTask


def _check_prune(prune) -> bool:
    if not isinstance(prune, bool):
        raise ValidationError(f"prune must be true or false, got {prune!r}")
    return prune


@app.task(base=NetjobsTask, bind=True, name="netjobs.inventory.import_text")
def import_text(self, content: str, fmt: str, source: str = "<cli>", prune: bool = False) -> dict:
    """Import inventory text sent with the task (the CLI reads the file on the operator's host)."""
    if not isinstance(content, str):
        raise ValidationError("content must be the inventory file's text")
    if fmt not in FORMATS:
        raise ValidationError(f"fmt must be one of {', '.join(FORMATS)}, got {fmt!r}")
    check_size(content, str(source))
    return import_inventory(content, fmt, str(source), _check_prune(prune), progress=self.progress)


@app.task(base=NetjobsTask, bind=True, name="netjobs.inventory.import_file")
def import_file(self, path: str, prune: bool = False) -> dict:
    """Import an inventory file that lives on the worker host; its format comes from its name."""
    if not isinstance(path, str) or not path:
        raise ValidationError("path must be a file name")
    fmt = detect_format(path)
    content = read_inventory_file(path, host=f"worker {self.request.hostname}")
    return import_inventory(content, fmt, path, _check_prune(prune), progress=self.progress)
