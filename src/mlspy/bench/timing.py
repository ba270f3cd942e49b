"""Repeated timing with medians."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass
class Timer:
    repeat: int = 5

    def once(self, fn: Callable[[], T]) -> tuple[T, float]:
        start = time.perf_counter()
        value = fn()
        return value, time.perf_counter() - start

    def median(self, samples: list[float]) -> float:
        return statistics.median(samples) if samples else float("nan")

    def measure(self, fn: Callable[[], object]) -> float:
        return self.median([self.once(fn)[1] for _ in range(self.repeat)])
