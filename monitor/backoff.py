"""Capped exponential back-off: one formula for the probes and the alert outbox (each adds
its own jitter: a hash of the target and cycle time for the probes, a seeded RNG for the
outbox)."""

from __future__ import annotations


def capped_backoff(base: float, cap: float, failures: int) -> float:
    """base·2^(failures-1), at most `cap`; 0 before the first failure."""
    if failures <= 0:
        return 0.0
    # the exponent is bounded so a long outage cannot overflow the float
    return min(cap, base * 2.0 ** min(failures - 1, 64))
