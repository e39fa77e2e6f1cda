"""One timer helper for every stage, device-synchronised before it stops."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class StageTimer:
    """Accumulates wall seconds per named stage.

    ``sync`` is called before each timer stops, so that asynchronous device
    work queued inside a stage is charged to that stage and not to the next.
    """

    def __init__(self, sync: Callable[[], None] | None = None,
                 on_start: Callable[[str], None] | None = None):
        self.seconds: dict[str, float] = {}
        self._sync = sync or (lambda: None)
        self._on_start = on_start
        self._t0 = time.perf_counter()

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if self._on_start is not None:
            self._on_start(name)
        start = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    def add(self, name: str, seconds: float) -> None:
        """Charge ``seconds`` to stage ``name`` (for work timed elsewhere)."""
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def total(self) -> float:
        """Seconds since the timer was made."""
        self._sync()
        return time.perf_counter() - self._t0

    def as_dict(self) -> dict[str, float]:
        out = {k: round(v, 6) for k, v in self.seconds.items()}
        out["total"] = round(self.total(), 6)
        return out
