"""roles/netjobs_app's netjobs_redis_url filter, loaded by path: the URLs it writes into
netjobs.env are the ones netjobs' configuration reads back, credentials intact."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from netjobs.config import load_settings
from netjobs.redis_clients import SentinelURL

PLUGIN = Path(__file__).resolve().parents[2] / "roles/netjobs_app/filter_plugins/netjobs_redis.py"
_spec = importlib.util.spec_from_file_location("netjobs_app_redis_filter", PLUGIN)
plugin = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(plugin)

PASSWORD = "p@ss:w/rd;%x y"  # every character that would break a URL
DATABASE = {"NETJOBS_DATABASE_URL": "postgresql+psycopg2://u:p@127.0.0.1/netjobs"}


def test_a_single_redis_url_keeps_its_credentials_and_scheme():
    url = plugin.netjobs_redis_url("netjobs", PASSWORD, "10.0.0.5", 6380, 2, tls=True)
    assert url.startswith("rediss://netjobs:") and url.endswith("@10.0.0.5:6380/2")
    settings = load_settings({**DATABASE, "NETJOBS_BROKER_URL": url, "NETJOBS_REDIS_TLS_CA_FILE": "/etc/hostname"})
    from netjobs.celery_settings import without_credentials

    assert without_credentials(settings.broker_url)[1] == {"username": "netjobs", "password": PASSWORD}
    assert plugin.netjobs_redis_url("u", "p", "fd00::5", 6379, 0) == "redis://u:p@[fd00::5]:6379/0"


def test_sentinel_urls_name_every_sentinel_with_the_credentials_and_netjobs_reads_them():
    url = plugin.netjobs_redis_url("netjobs", PASSWORD, "", 6379, 0, tls=True,
                                   sentinels=["10.0.0.11", "10.0.0.12", "10.0.0.13"], sentinel_port=26380)
    assert url.count("sentinel://") == 3 and url.count(";") == 2
    settings = load_settings({**DATABASE, "NETJOBS_BROKER_URL": url, "NETJOBS_REDIS_SENTINEL_MASTER": "netjobs",
                              "NETJOBS_REDIS_TLS_CA_FILE": "/etc/hostname"})
    parsed = SentinelURL.parse(settings.broker_url)
    assert parsed.nodes == [("10.0.0.11", 26380), ("10.0.0.12", 26380), ("10.0.0.13", 26380)]
    assert parsed.credentials == {"username": "netjobs", "password": PASSWORD}
