"""Command line of the device simulator (see ``--help``)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import signal
import sys
import threading
from pathlib import Path

from netjobs.devsim.realism import DISTRIBUTIONS, Latency, Realism
from netjobs.devsim.server import Fleet, load_host_key, read_authorized_keys
from netjobs.devsim.shells import FAIL_MODES, PLATFORMS, DeviceSpec

PASSWORD_ENV = "NETJOBS_DEVSIM_PASSWORD"


def _platforms(raw: str) -> list[str]:
    names = [p.strip() for p in raw.split(",") if p.strip()]
    bad = [p for p in names if p not in PLATFORMS]
    if not names or bad:
        raise argparse.ArgumentTypeError(f"unknown platform {', '.join(bad) or raw!r} (choose from {', '.join(PLATFORMS)})")
    return names


def _int_between(low: int, high: int, what: str):
    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {raw!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{what} must be {low}-{high}, got {value}")
        return value

    return parse


_port = _int_between(0, 65535, "port")
_count = _int_between(1, 5000, "count")


def _seconds_range(raw: str) -> tuple[float, float]:
    low, _, high = raw.partition("-")
    try:
        low_s, high_s = float(low), float(high or low)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds like 0.2-1.5, got {raw!r}") from None
    if not 0 <= low_s <= high_s:
        raise argparse.ArgumentTypeError(f"expected 0 <= low <= high, got {raw!r}")
    return low_s, high_s


def _lines_range(raw: str) -> tuple[int, int]:
    low, _, high = raw.partition("-")
    if not low.isdigit() or not (high or low).isdigit() or not 1 <= int(low) <= int(high or low):
        raise argparse.ArgumentTypeError(f"expected lines like 1000-5000, got {raw!r}")
    return int(low), int(high or low)


def _share(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {raw!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"a share must be 0-1, got {raw}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m netjobs.devsim",
        description="Serve simulated network devices over real SSH (password or public-key login).",
    )
    p.add_argument("--listen", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=_port, default=2222, help="port of the first device; 0 picks free ports")
    p.add_argument("--base-port", type=_port, help="same as --port, for --count")
    p.add_argument("--count", type=_count, default=1, help="number of devices, on consecutive ports")
    p.add_argument("--platform", type=_platforms, default=["cisco_ios"],
                   help=f"one of {', '.join(PLATFORMS)}; a comma list is cycled over --count devices")
    p.add_argument("--hostname", default="R1", help="device hostname; with --count N: NAME-001 ... NAME-N")
    p.add_argument("--username", required=True, help="login user name")
    p.add_argument("--password", help=f"login password (or set {PASSWORD_ENV})")
    p.add_argument("--secret", default="", help="enable secret (default: the password)")
    p.add_argument("--config-file", type=Path, help="configuration body shown by every device (re-read on each show)")
    p.add_argument("--config-dir", type=Path, help="per-device bodies: DIR/HOSTNAME.cfg, re-read on each show")
    p.add_argument("--fail-mode", choices=FAIL_MODES, default="none",
                   help="disconnect-mid-session drops the connection while sending the configuration; "
                        "hang never answers the configuration command")
    p.add_argument("--host-key", type=Path, help="ECDSA host key file, created if missing (default: new key per run)")
    p.add_argument("--authorized-keys", type=Path, help="OpenSSH authorized_keys file for public-key login")
    p.add_argument("--ports-file", type=Path, help="write {hostname: port} as JSON here once listening")
    p.add_argument("--stats-file", type=Path, help="keep session counters here as JSON (rewritten every second)")
    p.add_argument("--log-level", default="WARNING", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    r = p.add_argument_group("realism", "off unless --realistic; then every option below has a WAN-like default")
    r.add_argument("--realistic", action="store_true",
                   help="banners, latency, paging and big generated configurations")
    r.add_argument("--seed", type=int, default=0, help="same seed, same fleet and the same latencies")
    r.add_argument("--login-latency", type=_seconds_range, default=(0.2, 1.5), metavar="LOW-HIGH",
                   help="seconds from password to prompt (default 0.2-1.5)")
    r.add_argument("--command-latency", type=_seconds_range, default=(0.03, 0.15), metavar="LOW-HIGH",
                   help="seconds per other command (default 0.03-0.15)")
    r.add_argument("--config-latency", type=_seconds_range, default=(0.5, 3.0), metavar="LOW-HIGH",
                   help="seconds to print the running configuration (default 0.5-3)")
    r.add_argument("--latency-distribution", choices=DISTRIBUTIONS, default="uniform")
    r.add_argument("--config-lines", type=_lines_range, default=(1000, 5000), metavar="LOW-HIGH",
                   help="lines of the generated configuration (default 1000-5000)")
    r.add_argument("--change-share", type=_share, default=0.0,
                   help="share of devices whose configuration changes on every show")
    r.add_argument("--slow-share", type=_share, default=0.0, help="share of slow devices")
    r.add_argument("--slow-factor", type=float, default=5.0, help="latency multiplier of slow devices (default 5)")
    r.add_argument("--flaky-share", type=_share, default=0.0,
                   help="share of flaky devices (refuse the login or drop the output in some sessions)")
    r.add_argument("--flaky-rate", type=_share, default=0.5, help="share of a flaky device's sessions that fail")
    r.add_argument("--unreachable-share", type=_share, default=0.0,
                   help="share of devices that refuse connections or never answer")
    r.add_argument("--no-paging", action="store_true", help="never page output")
    r.add_argument("--no-banners", action="store_true", help="no login banner and no message of the day")
    return p


def realism_from_args(args) -> Realism | None:
    if not args.realistic:
        return None
    dist = args.latency_distribution
    return Realism(
        seed=args.seed, login=Latency(*args.login_latency, dist), command=Latency(*args.command_latency, dist),
        config=Latency(*args.config_latency, dist), config_lines=args.config_lines, change_share=args.change_share,
        slow_share=args.slow_share, slow_factor=args.slow_factor, flaky_share=args.flaky_share,
        flaky_rate=args.flaky_rate, unreachable_share=args.unreachable_share, banners=not args.no_banners,
        paging=not args.no_paging)


def raise_open_file_limit() -> None:
    # Thousands of listening ports plus two descriptors per session exceed a default soft limit.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def write_stats(fleet: Fleet, path: Path) -> None:
    with fleet._lock:
        stats = dict(fleet.stats)
    stats["threads"] = threading.active_count()
    stats["session_seconds"] = round(stats["session_seconds"], 3)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(stats))
    tmp.replace(path)


def hostnames(base: str, count: int) -> list[str]:
    if count == 1:
        return [base]
    width = max(3, len(str(count)))
    return [f"{base}-{i:0{width}d}" for i in range(1, count + 1)]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    password = args.password if args.password is not None else os.environ.get(PASSWORD_ENV)
    if not password and not args.authorized_keys:
        parser.error(f"give --password (or {PASSWORD_ENV}) or --authorized-keys")
    logging.basicConfig(level=args.log_level, format="devsim %(levelname)s %(message)s")
    logging.getLogger("paramiko").setLevel(logging.CRITICAL)  # client hang-ups are normal here

    try:
        keys = read_authorized_keys(args.authorized_keys) if args.authorized_keys else frozenset()
        host_key = load_host_key(args.host_key)
    except (OSError, ValueError) as exc:
        print(f"devsim: cannot read keys: {exc}", file=sys.stderr)
        return 1

    try:
        realism = realism_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    raise_open_file_limit()
    base_port = args.base_port if args.base_port is not None else args.port
    fleet = Fleet(host_key)
    ports: dict[str, int] = {}
    for index, name in enumerate(hostnames(args.hostname, args.count)):
        config_file = args.config_file
        if args.config_dir is not None:
            config_file = args.config_dir / f"{name}.cfg"
        device = DeviceSpec(platform=args.platform[index % len(args.platform)], hostname=name,
                            username=args.username, password=password or "", secret=args.secret,
                            config_file=config_file, fail_mode=args.fail_mode, authorized_keys=keys,
                            realism=realism)
        port = base_port + index if base_port else 0
        try:
            ports[name] = fleet.add(device, args.listen, port)
        except OSError as exc:
            print(f"devsim: cannot listen on {args.listen}:{port}: {exc.strerror or exc}", file=sys.stderr)
            fleet.stop()
            return 1

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    fleet.start()
    if args.ports_file:
        tmp = args.ports_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(ports))
        tmp.replace(args.ports_file)
    first, last = min(ports.values()), max(ports.values())
    span = f"{first}" if first == last else f"{first}-{last}"
    print(f"devsim: {len(ports)} device(s) listening on {args.listen}:{span}", flush=True)
    if args.stats_file:
        write_stats(fleet, args.stats_file)  # at once: a reader may look before the first second is up
        while not stop.wait(1.0):
            write_stats(fleet, args.stats_file)
        write_stats(fleet, args.stats_file)
    stop.wait()
    fleet.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
