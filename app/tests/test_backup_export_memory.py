"""The git view's export holds a few configurations at a time, not the batch it exports.

Every backup worker exports on start (netjobs.archive_host). The export used to hold a batch of
up to 2,000 whole configurations several times over (the rows, the fast-import stream, its join):
in the 5,000-device re-run of bench/bench_fleet_backup.py the fresh backup worker passed its
384 MiB limit within seconds and recycled itself.
"""

from __future__ import annotations

import tracemalloc

from sqlalchemy import text

from netjobs.services.gitrepo import git

DEVICES = 300
LINES = 3000  # ~100 KB per configuration, ~30 MB in all


def _config(i: int) -> str:
    return f"hostname dev-{i:03d}\n" + "".join(f"interface Gi0/{n}\n description dev-{i:03d} port {n:05d} uplink\n"
                                                for n in range(LINES // 2))


def _archive(engine, first: int, last: int) -> int:
    """Devices ``first``..``last - 1`` with one changed snapshot each, old enough to be exported."""
    from netjobs.services.backup import content_hash

    size = 0
    with engine.begin() as conn:
        for i in range(first, last):
            body = _config(i)
            size += len(body)
            device_id = conn.execute(text(
                "INSERT INTO devices (name, mgmt_address, port, platform, tags, enabled, credentials_ref) "
                "VALUES (:n, '127.0.0.1', 22, 'cisco_ios', '{}', true, 'default') RETURNING id"),
                {"n": f"dev-{i:03d}"}).scalar_one()
            conn.execute(text("INSERT INTO config_contents (content_hash, content, lines) VALUES (:h, :c, :l)"),
                         {"h": content_hash(body), "c": body, "l": body.count("\n")})
            conn.execute(text("INSERT INTO config_snapshots (device_id, content_hash, changed, collected_at) "
                              "VALUES (:d, :h, true, now() - interval '2 hours')"),
                         {"d": device_id, "h": content_hash(body)})
    return size


def test_export_streams_the_configurations_it_commits(db, tmp_path):
    from netjobs.services.archive import export_git

    repo = tmp_path / "view"
    _archive(db, 0, 1)
    assert export_git(repo)["exported"] == 1  # imports and statement caches before measuring
    size = _archive(db, 1, DEVICES + 1)

    tracemalloc.start()
    try:
        result = export_git(repo)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert result["exported"] == DEVICES
    assert git(repo, "rev-list", "--count", "HEAD").stdout.strip() == str(DEVICES + 1)
    for i in (1, DEVICES // 2, DEVICES):
        assert git(repo, "show", f"HEAD:dev-{i:03d}.cfg").stdout == _config(i)
    with db.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM config_snapshots WHERE git_commit IS NULL")).scalar() == 0
    # Holding the batch costs a multiple of its size; streaming, a few configurations.
    assert peak < size / 4, f"export held {peak / 2**20:.1f} MB for {size / 2**20:.1f} MB of configurations"
