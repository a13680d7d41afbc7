"""One backup per burst of changes: per device, wait until the changes have been quiet for the
debounce time, or at most ``MAX_WAIT_FACTOR`` times it from the first change of the burst (a device
that never stops changing still gets backed up)."""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_WAIT_FACTOR = 5
MAX_USERS_TEXT = 255  # config_snapshots.changed_by


@dataclass
class Burst:
    device: str
    first_at: float
    last_at: float
    changes: int = 0
    users: list[str] = field(default_factory=list)

    def add(self, at: float, user: str | None) -> None:
        self.last_at = at
        self.changes += 1
        if user and user not in self.users:
            self.users.append(user)

    def merge(self, other: Burst) -> None:
        self.first_at = min(self.first_at, other.first_at)
        self.last_at = max(self.last_at, other.last_at)
        self.changes += other.changes
        for user in other.users:
            if user not in self.users:
                self.users.append(user)

    @property
    def changed_by(self) -> str | None:
        """Who changed it: one user, or several in order, comma-separated."""
        return ", ".join(self.users)[:MAX_USERS_TEXT] or None


class Debouncer:
    def __init__(self, quiet_seconds: float, max_wait_factor: float = MAX_WAIT_FACTOR):
        self.quiet_seconds = quiet_seconds
        self.max_wait = quiet_seconds * max_wait_factor
        self._bursts: dict[str, Burst] = {}

    def __len__(self) -> int:
        return len(self._bursts)

    def change(self, device: str, user: str | None, now: float) -> bool:
        """Note a change; True when it starts a new burst."""
        burst = self._bursts.get(device)
        started = burst is None
        if started:
            burst = self._bursts[device] = Burst(device, now, now)
        burst.add(now, user)
        return started

    def due(self, now: float) -> list[Burst]:
        """The bursts to back up now (taken out)."""
        ready = [b for b in self._bursts.values()
                 if now - b.last_at >= self.quiet_seconds or now - b.first_at >= self.max_wait]
        for burst in ready:
            del self._bursts[burst.device]
        return ready

    def take_all(self) -> list[Burst]:
        bursts, self._bursts = list(self._bursts.values()), {}
        return bursts
