"""Splits endpoints between replicas by a stable hash (rendezvous hashing)."""

from __future__ import annotations

import hashlib


def _score(endpoint_id: str, index: int) -> int:
    digest = hashlib.blake2b(f"{index}:{endpoint_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def owner(endpoint_id: str, count: int) -> int:
    """The shard (0..count-1) that watches `endpoint_id`; adding a shard moves ~1/(count+1)."""
    return max(range(count), key=lambda i: _score(endpoint_id, i))


def owns(endpoint_id: str, index: int, count: int) -> bool:
    """True when shard `index` of `count` watches `endpoint_id`."""
    return owner(endpoint_id, count) == index
