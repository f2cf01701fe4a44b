"""monitor.bodies: the bounded body reader every answer goes through (issue 12.2), and its
two config keys. The hostile servers over real sockets are in tests/test_bodycap.py."""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import AsyncIterator

import pytest

from monitor.bodies import (
    RUNPOD_BODY_LIMITS,
    BodyError,
    BodyLimits,
    iter_capped,
    read_capped,
    size,
)
from monitor.config import ConfigError, RunPodSettings, settings_from_dict

BODY = json.dumps({"data": {"myself": {"endpoints": [{"id": f"ep{i}"} for i in range(500)]}}})
RAW = BODY.encode()
LIMITS = BodyLimits(64 * 1024, len(RAW), "runpod")  # decoded cap: exactly RAW


async def _chunks(data: bytes, n: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), n):
        yield data[i:i + n]


def _raw_deflate(data: bytes) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return c.compress(data) + c.flush()


ENCODED = {
    None: RAW,
    "identity": RAW,
    "gzip": gzip.compress(RAW),
    "x-gzip": gzip.compress(RAW),
    "GZIP": gzip.compress(RAW),
    "deflate": zlib.compress(RAW),  # the zlib format, as RFC 9110 says
    "deflate ": _raw_deflate(RAW),  # raw deflate, as some servers send
    "gzip, identity": gzip.compress(RAW),
}


@pytest.mark.parametrize("chunk", [1, 7, 4096, 1 << 20])
@pytest.mark.parametrize("encoding", list(ENCODED))
async def test_a_body_at_the_cap_decodes(encoding: str | None, chunk: int) -> None:
    """Every encoding we ask for, cut at any chunk boundary, decodes to the body; exactly
    the decoded cap is allowed."""
    data = ENCODED[encoding]
    body = await read_capped(_chunks(data, chunk), limits=LIMITS, content_encoding=encoding,
                             content_length=str(len(data)))
    assert body == RAW


async def test_multi_member_gzip_decodes() -> None:
    half = len(RAW) // 2
    data = gzip.compress(RAW[:half]) + gzip.compress(RAW[half:])
    assert await read_capped(_chunks(data, 100), limits=LIMITS, content_encoding="gzip") == RAW


@pytest.mark.parametrize("encoding", ["gzip", "deflate", None])
async def test_one_byte_over_the_decoded_cap_is_refused(encoding: str | None) -> None:
    limits = BodyLimits(64 * 1024, len(RAW) - 1, "runpod")
    data = ENCODED[encoding]
    cap = rf"the {len(RAW) - 1:,} bytes cap \(runpod\.max_decoded_bytes\)"
    with pytest.raises(BodyError, match=cap):
        await read_capped(_chunks(data, 4096), limits=limits, content_encoding=encoding)


async def test_the_wire_cap_counts_compressed_bytes() -> None:
    """A gzip body over the wire cap is refused though it inflates to less than the
    decoded cap; the message names the wire cap."""
    data = gzip.compress(RAW)
    limits = BodyLimits(len(data) - 1, 1 << 30, "runpod")
    with pytest.raises(BodyError, match=r"over the .* cap \(runpod\.max_answer_bytes\)"):
        await read_capped(_chunks(data, 64), limits=limits, content_encoding="gzip")


async def test_a_content_length_over_the_cap_is_refused_before_reading() -> None:
    read = []

    async def never_read() -> AsyncIterator[bytes]:
        read.append(True)
        yield b"{}"

    with pytest.raises(BodyError, match=r"Content-Length 1,000,000,000,000 is over the 32 MiB "
                                        r"cap \(runpod\.max_answer_bytes\)"):
        await read_capped(never_read(), limits=RUNPOD_BODY_LIMITS, content_length="1000000000000")
    assert read == []


async def test_an_endless_stream_stops_at_the_cap() -> None:
    """No more than the cap is read (plus the chunk that crossed it)."""
    pulled = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal pulled
        while True:
            pulled += 1000
            yield b" " * 1000

    limits = BodyLimits(100_000, 100_000)
    with pytest.raises(BodyError, match=r"over the 100,000 bytes cap$"):
        await read_capped(endless(), limits=limits)
    assert pulled <= 101_000


async def test_pieces_stream_without_holding_the_body() -> None:
    """iter_capped yields decoded pieces as they come (for streamed answers: worker logs)."""
    data = gzip.compress(b"x" * (3 << 20))
    sizes = [len(p) async for p in iter_capped(_chunks(data, 1 << 20),
                                                limits=BodyLimits(1 << 20, 4 << 20),
                                                content_encoding="gzip")]
    assert sum(sizes) == 3 << 20
    assert max(sizes) <= 1 << 20


@pytest.mark.parametrize(("encoding", "data", "message"), [
    ("br", b"\x0b\x02\x80{}\x03", r"Content-Encoding 'br' not supported \(we ask for gzip, "),
    ("zstd", b"garbage", "Content-Encoding 'zstd' not supported"),
    ("gzip, gzip", gzip.compress(gzip.compress(RAW)), "not supported"),
    ("gzip", b"not gzip at all", "gzip body does not decode"),
    ("gzip", gzip.compress(RAW, mtime=0)[:40], "gzip body ends before its stream does"),
    ("deflate", zlib.compress(RAW) + b"tail", "deflate body has data after the end"),
    ("gzip", gzip.compress(RAW) + b"tail", "gzip body does not decode"),
])
async def test_bodies_we_cannot_decode_are_refused(
    encoding: str, data: bytes, message: str
) -> None:
    with pytest.raises(BodyError, match=message):
        await read_capped(_chunks(data, 16), limits=LIMITS, content_encoding=encoding)


async def test_an_empty_compressed_body_is_empty() -> None:
    assert await read_capped(_chunks(b"", 1), limits=LIMITS, content_encoding="gzip") == b""


def test_sizes_read_as_people_write_them() -> None:
    assert [size(32 << 20), size(512 << 10), size(1 << 30), size(1000)] == [
        "32 MiB", "512 KiB", "1 GiB", "1,000 bytes"]


def test_config_defaults_are_the_client_defaults() -> None:
    runpod = RunPodSettings()
    assert (runpod.max_answer_bytes, runpod.max_decoded_bytes) == (
        RUNPOD_BODY_LIMITS.max_answer_bytes, RUNPOD_BODY_LIMITS.max_decoded_bytes)


@pytest.mark.parametrize(("key", "value"), [
    ("max_answer_bytes", 64), ("max_decoded_bytes", 2 * 1024**3), ("max_decoded_bytes", "1MB"),
])
def test_config_refuses_a_cap_out_of_range(key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"runpod.{key}"):
        settings_from_dict({"runpod": {key: value}}, env={})
