"""HTTP basic auth for /metrics from a file of ``user:hash`` lines (NETJOBS_EXPORTER_BASIC_AUTH_FILE).

A hash is bcrypt (``$2b$...``, as Prometheus' own web config uses: ``htpasswd -nbBC 12 USER PASS``
or ``python3 -c 'import bcrypt; print(bcrypt.hashpw(b"PASS", bcrypt.gensalt()).decode())'``), or
``sha256:HEX`` of a long random password (unsalted: only for generated secrets). No password is ever
read from the environment. A bcrypt check costs ~0.1-0.3 s, so each credential that passed is
remembered (by its SHA-256) for the life of the process.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import threading
from pathlib import Path

from netjobs.config import ConfigError

VARIABLE = "NETJOBS_EXPORTER_BASIC_AUTH_FILE"
_BCRYPT = re.compile(r"^\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}$")
_SHA256 = re.compile(r"^sha256:[0-9a-f]{64}$")
MAX_REMEMBERED = 64


def load_users(path: str | Path) -> dict[str, str]:
    """user -> hash. Raises ConfigError naming the variable and the line for anything malformed."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise ConfigError(f"{VARIABLE} names {str(path)!r}, which cannot be read ({exc.strerror})") from None
    users: dict[str, str] = {}
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, hashed = line.partition(":")
        if not sep or not user:
            raise ConfigError(f"{VARIABLE} {path}:{number}: expected user:hash")
        if not (_BCRYPT.match(hashed) or _SHA256.match(hashed.lower())):
            raise ConfigError(f"{VARIABLE} {path}:{number}: the hash of {user!r} is neither bcrypt ($2b$...) "
                              "nor sha256:HEX (a plain password is not accepted)")
        if user in users:
            raise ConfigError(f"{VARIABLE} {path}:{number}: user {user!r} appears twice")
        users[user] = hashed
    if not users:
        raise ConfigError(f"{VARIABLE} {path}: no user:hash line")
    return users


class BasicAuth:
    def __init__(self, users: dict[str, str]):
        self.users = users
        self._passed: set[bytes] = set()
        self._lock = threading.Lock()

    def allows(self, header: str | None) -> bool:
        """Whether an ``Authorization`` header carries a valid user and password."""
        if not header or not header.startswith("Basic "):
            return False
        remembered = hashlib.sha256(header.encode()).digest()
        with self._lock:
            if remembered in self._passed:
                return True
        try:
            user, sep, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        hashed = self.users.get(user)
        if not sep or hashed is None or not _matches(password, hashed):
            return False
        with self._lock:
            if len(self._passed) >= MAX_REMEMBERED:
                self._passed.clear()
            self._passed.add(remembered)
        return True


def _matches(password: str, hashed: str) -> bool:
    if hashed.startswith("$2"):
        import bcrypt

        return bcrypt.checkpw(password.encode(), hashed.encode())
    digest = hashlib.sha256(password.encode()).hexdigest()
    return hmac.compare_digest(digest, hashed.lower().removeprefix("sha256:"))
