"""Inventory import from CSV or YAML: every row validated, good rows upserted, bad rows reported.

CSV: a header line is required; columns ``name,address,platform`` plus optional
``port,site,tags,enabled,credentials_ref`` in any order. Tags are separated by ``;`` or ``|``.
Blank lines and lines starting with ``#`` are skipped. A field may not span lines.

YAML: a list of mappings with the same keys, either the whole document or under ``devices:``.

Errors carry the file's real line number (for YAML, the line where the item starts).
"""

from __future__ import annotations

import csv
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Callable

import yaml
from sqlalchemy import delete, func, literal_column, select, tuple_
from sqlalchemy.dialects.postgresql import insert

from netjobs.db.engine import session_scope
from netjobs.db.models import Device
from netjobs.errors import ValidationError
from netjobs.services.audit import log_change
from netjobs.services.devices import FIELDS, REQUIRED_FIELDS, DeviceSpec, build_spec

MAX_INVENTORY_BYTES = 10 * 1024 * 1024
UPSERT_BATCH = 1000
FORMATS = ("csv", "yaml")
_COMPARED = ("mgmt_address", "port", "platform", "site", "tags", "enabled", "credentials_ref")


@dataclass
class ParseResult:
    devices: list[DeviceSpec] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)  # [{"line": n, "reason": "..."}], in line order
    lines: dict[str, int] = field(default_factory=dict)  # device name -> line it came from

    def error(self, line: int, reason: str) -> None:
        self.errors.append({"line": line, "reason": reason})


def detect_format(filename: str) -> str:
    suffix = PurePath(filename).suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".yml", ".yaml"):
        return "yaml"
    raise ValidationError(f"cannot tell the format of {filename!r} from its name: use a .csv, .yml or .yaml file")


def check_size(text: str, source: str = "<input>") -> None:
    size = len(text.encode("utf-8", errors="surrogatepass"))
    if size > MAX_INVENTORY_BYTES:
        raise ValidationError(f"{source} is {size} bytes; inventory files are limited to {MAX_INVENTORY_BYTES} bytes "
                              "(10 MiB): split it")


def read_inventory_file(path: str | Path, host: str | None = None) -> str:
    """The text of an inventory file, size-checked; ValidationError says what is wrong with it."""
    file = Path(path)
    where = f" on {host}" if host else ""
    try:
        if not file.is_file():
            raise ValidationError(f"{path} does not exist{where} or is not a file")
        size = file.stat().st_size
        if size > MAX_INVENTORY_BYTES:
            raise ValidationError(f"{path} is {size} bytes; inventory files are limited to {MAX_INVENTORY_BYTES} "
                                  "bytes (10 MiB): split it")
        return file.read_text(encoding="utf-8-sig")
    except PermissionError:
        raise ValidationError(f"{path} is not readable{where}") from None
    except UnicodeDecodeError as exc:
        raise ValidationError(f"{path} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset "
                              f"{exc.start})") from None


# --- CSV -------------------------------------------------------------------------------------------


def _physical_lines(text: str):
    """(line number, line) for every line, counting like an editor does (\\n, \\r\\n)."""
    for number, line in enumerate(text.split("\n"), start=1):
        yield number, line.removesuffix("\r")


def _csv_fields(line: str) -> list[str]:
    try:
        rows = list(csv.reader([line], strict=True))
    except csv.Error as exc:
        raise ValueError(f"malformed CSV: {exc}") from None
    return rows[0] if rows else []


def _parse_header(fields: list[str]) -> list[str]:
    columns = [f.strip().lower() for f in fields]
    problems = []
    unknown = [c for c in columns if c not in FIELDS]
    if unknown:
        problems.append(f"unknown column{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} "
                        f"(known: {', '.join(FIELDS)})")
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if repeated:
        problems.append(f"column{'s' if len(repeated) > 1 else ''} {', '.join(map(repr, repeated))} appear twice")
    missing = [c for c in REQUIRED_FIELDS if c not in columns]
    if missing:
        problems.append(f"required column{'s' if len(missing) > 1 else ''} {', '.join(missing)} missing")
    if problems:
        raise ValueError("header: " + "; ".join(problems) + "; no rows imported")
    return columns


def _csv_rows(text: str, result: ParseResult):
    """(line number, raw field dict) per data row; header and malformed-line errors go to ``result``."""
    columns: list[str] | None = None
    for number, line in _physical_lines(text):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            fields = _csv_fields(line)
        except ValueError as exc:
            if columns is None:
                result.error(number, f"header: {exc}; no rows imported")
                return
            result.error(number, str(exc))
            continue
        if not any(f.strip() for f in fields):  # ",,," from a spreadsheet
            continue
        if columns is None:
            try:
                columns = _parse_header(fields)
            except ValueError as exc:
                result.error(number, str(exc))
                return
            continue
        if len(fields) > len(columns):
            result.error(number, f"{len(fields)} fields but the header has {len(columns)} columns")
            continue
        yield number, {c: (fields[i] if i < len(fields) else "") for i, c in enumerate(columns)}
    if columns is None:
        result.error(1, "no header line: expected columns " + ",".join(FIELDS))


# --- YAML ------------------------------------------------------------------------------------------


def _yaml_items(text: str, result: ParseResult):
    """(line number, raw mapping) per list item; structural errors go to ``result``."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        reason = getattr(exc, "problem", None) or str(exc)
        result.error(mark.line + 1 if mark else 1, f"not valid YAML: {reason}; no rows imported")
        return
    if root is None:
        return
    seq_node = root
    if isinstance(data, dict):
        if set(data) != {"devices"}:
            result.error(root.start_mark.line + 1, "expected a list of devices, or a mapping with only the key "
                                                   "'devices'; no rows imported")
            return
        seq_node = next(v for k, v in root.value if k.value == "devices")
        data = data["devices"]
    if data is None:
        return
    if not isinstance(data, list):
        result.error(seq_node.start_mark.line + 1, "devices must be a list of mappings; no rows imported")
        return
    for node, item in zip(seq_node.value, data):
        number = node.start_mark.line + 1
        if not isinstance(item, dict):
            result.error(number, f"a device must be a mapping with keys {', '.join(FIELDS)}, got "
                                 f"{type(item).__name__}")
            continue
        keys = [k.value for k, _ in node.value]
        repeated = sorted({k for k in keys if keys.count(k) > 1})
        if repeated:
            result.error(number, f"key{'s' if len(repeated) > 1 else ''} {', '.join(map(repr, repeated))} "
                                 "given twice")
            continue
        yield number, {str(k): v for k, v in item.items()}


# --- parse and import ------------------------------------------------------------------------------


def parse_inventory(text: str, fmt: str, source: str = "<input>") -> ParseResult:
    """Validate every row. Rows sharing a name are all rejected: which one is meant is unclear."""
    if fmt not in FORMATS:
        raise ValidationError(f"unknown inventory format {fmt!r} (use csv or yaml)")
    if not isinstance(text, str):
        raise ValidationError(f"{source}: inventory content must be text")
    check_size(text, source)
    text = text.removeprefix("\ufeff")
    result = ParseResult()
    rows = _csv_rows(text, result) if fmt == "csv" else _yaml_items(text, result)
    valid: list[tuple[int, DeviceSpec]] = []
    for number, raw in rows:
        try:
            valid.append((number, build_spec(raw)))
        except ValidationError as exc:
            result.error(number, str(exc))
    lines_by_name: dict[str, list[int]] = defaultdict(list)
    for number, spec in valid:
        lines_by_name[spec.name].append(number)
    for number, spec in valid:
        where = lines_by_name[spec.name]
        if len(where) > 1:
            others = ", ".join(str(n) for n in where if n != number)
            result.error(number, f"duplicate name {spec.name!r} (also on line{'s' if len(where) > 2 else ''} "
                                 f"{others}); none of these rows imported")
        else:
            result.devices.append(spec)
            result.lines[spec.name] = number
    result.errors.sort(key=lambda e: e["line"])
    return result


def _upsert(session, specs: list[DeviceSpec]) -> tuple[int, int]:
    """Insert new devices, update changed ones, leave equal ones untouched. Returns (created, updated)."""
    statement = insert(Device)
    changed = tuple_(*(getattr(Device, c) for c in _COMPARED)).is_distinct_from(
        tuple_(*(statement.excluded[c] for c in _COMPARED))
    )
    statement = statement.on_conflict_do_update(
        index_elements=[Device.name],
        set_={c: statement.excluded[c] for c in _COMPARED} | {"updated_at": func.now()},
        where=changed,
    ).returning(literal_column("xmax = 0").label("inserted"))  # xmax is 0 on a freshly inserted row
    # One compiled statement, many parameter sets: SQLAlchemy sends them as multi-row VALUES pages.
    inserted = [row.inserted for row in session.execute(statement, [s.row() for s in specs])]
    return sum(inserted), len(inserted) - sum(inserted)


def import_inventory(text: str, fmt: str, source: str = "<input>", prune: bool = False,
                     progress: Callable[[int, int], None] | None = None) -> dict:
    """Import the valid rows in one transaction and report the invalid ones.

    ``prune`` also removes devices the file does not list (with their snapshots and results). It is
    skipped when any row is invalid or the file lists no device, so a typo never deletes a device.
    """
    parsed = parse_inventory(text, fmt, source)
    summary = {"source": source, "created": 0, "updated": 0, "unchanged": 0, "invalid": len(parsed.errors),
               "errors": parsed.errors, "pruned": 0, "prune_skipped": None}
    specs = parsed.devices
    with session_scope() as session:
        for start in range(0, len(specs), UPSERT_BATCH):
            created, updated = _upsert(session, specs[start:start + UPSERT_BATCH])
            summary["created"] += created
            summary["updated"] += updated
            if progress is not None:
                progress(min(start + UPSERT_BATCH, len(specs)), len(specs))
        summary["unchanged"] = len(specs) - summary["created"] - summary["updated"]
        if prune:
            if parsed.errors:
                summary["prune_skipped"] = f"{len(parsed.errors)} invalid row(s): fix them to prune"
            elif not specs:
                summary["prune_skipped"] = "the file lists no devices"
            else:
                names = [s.name for s in specs]
                doomed = select(Device.id).where(Device.name.not_in(names))
                summary["pruned"] = session.execute(delete(Device).where(Device.id.in_(doomed))).rowcount
        if summary["created"] or summary["updated"] or summary["pruned"]:
            log_change("devices.import", source, {k: summary[k] for k in ("created", "updated", "pruned", "invalid")},
                       session=session)
    return summary
