"""What a worker reports about its broker connection, without secrets.

`celery inspect stats` and Flower's worker pages (`/api/workers?refresh=1`) show kombu's
``Connection.info()`` as Celery's Connection bootstep reports it: Celery drops the top-level
password and masks the URLs in ``alternates``, but with Sentinel URLs the secret is also in
``transport_options`` (``sentinel_kwargs``: how the Sentinels themselves are reached).
:class:`PublicBrokerInfoStep` runs after that bootstep and reports the same, with every secret
masked at any depth as Celery masks its configuration.
"""

from __future__ import annotations

from celery import bootsteps
from celery.app.utils import filter_hidden_settings

from netjobs.services.doctor import redact_url


def public_broker_info(info: dict) -> dict:
    """``info`` (kombu's ``Connection.info()``) as it may be shown: passwords and other secrets
    masked at any depth, URLs without their password."""
    shown = filter_hidden_settings(info)
    shown.pop("password", None)
    shown["alternates"] = [redact_url(url) if isinstance(url, str) else url for url in shown.get("alternates") or ()]
    return shown


class PublicBrokerInfoStep(bootsteps.StartStopStep):
    """Consumer step: replaces the ``broker`` entry of the worker's stats (only started steps report,
    in order: this one after the Connection step)."""

    requires = ("celery.worker.consumer.connection:Connection",)

    def info(self, consumer):
        if not consumer.connection:
            return {}
        return {"broker": public_broker_info(consumer.connection.info())}
