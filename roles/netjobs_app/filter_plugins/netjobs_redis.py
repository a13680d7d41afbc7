"""The Redis URL of netjobs.env (NETJOBS_BROKER_URL and the others), from the role's variables.

Plain Python without Ansible imports, so that app/tests can load this file by path and check the
URLs against netjobs' own configuration parser.
"""

from __future__ import annotations

from urllib.parse import quote


def netjobs_redis_url(username, password, host, port, db, tls=False, sentinels=(), sentinel_port=26379):
    """``redis://`` (``rediss://`` with ``tls``) to ``host``, or with ``sentinels`` kombu's
    ``sentinel://...;sentinel://...`` form, one node per Sentinel, the credentials in each (the
    Sentinels ask for the same ACL user; with TLS, netjobs reaches them over TLS when the CA is set).
    User and password are percent-encoded, so any character is safe."""
    userinfo = f"{quote(str(username), safe='')}:{quote(str(password), safe='')}@"
    if sentinels:
        return ";".join(f"sentinel://{userinfo}{_host(node)}:{int(sentinel_port)}/{int(db)}" for node in sentinels)
    scheme = "rediss" if tls else "redis"
    return f"{scheme}://{userinfo}{_host(host)}:{int(port)}/{int(db)}"


def _host(address):
    address = str(address)
    return f"[{address}]" if ":" in address and not address.startswith("[") else address


class FilterModule:
    """Ansible entry point."""

    def filters(self):
        return {"netjobs_redis_url": netjobs_redis_url}
