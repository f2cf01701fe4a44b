"""Bounded reads of HTTP answer bodies: what one answer may cost, on the wire and decoded.

Every body the monitor reads goes through `iter_capped` (or `read_capped`, the same
joined): RunPod's answers on both of the client's transports, Slack's and Alertmanager's
through `capped_session`, whose responses' `read()`, `text()` and `json()` are capped (which
covers the reads slack_sdk makes itself). The body is read as a stream and decompressed
here with zlib's `max_length`, so a 1 MB gzip body that inflates to 1 GiB costs at most
the decoded cap, and an endless body stops at the wire cap. A body over a cap, or in an
encoding we did not ask for, raises `BodyError`, which callers report as malformed.

We ask for gzip and deflate only (`ACCEPT_ENCODING`): the two the standard library decodes
with a bound on its output. A server that sends br or zstd anyway gets a `BodyError`.
"""

from __future__ import annotations

import functools
import re
import zlib
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp

ACCEPT_ENCODING = "gzip, deflate"
READ_CHUNK = 64 * 1024
MIB = 1024 * 1024
INFLATE_STEP = 1 * MIB
_CODING_NAMES = re.compile(r"[a-z0-9-]{1,12}(, [a-z0-9-]{1,12})*")


@dataclass(frozen=True, slots=True)
class BodyLimits:
    """The most bytes one answer may take off the wire (`max_answer_bytes`, before
    Content-Encoding is undone) and after decompression (`max_decoded_bytes`)."""

    max_answer_bytes: int
    max_decoded_bytes: int
    setting: str = ""  # the config section that sets them, for messages: "runpod"

    def __post_init__(self) -> None:
        if self.max_answer_bytes < 1 or self.max_decoded_bytes < 1:
            raise ValueError("body limits must be >= 1 byte")

    def cap(self, n: int, key: str) -> str:
        """'the 32 MiB cap (runpod.max_answer_bytes)': a cap as a message names it."""
        return f"the {size(n)} cap" + (f" ({self.setting}.{key})" if self.setting else "")


# RunPod: the simulator's `myself` for 5,000 endpoints is 2.7 MB decoded, 76 kB gzip
# (benchmarks/bombs.py); config.yaml's runpod.max_answer_bytes / max_decoded_bytes.
RUNPOD_BODY_LIMITS = BodyLimits(32 * MIB, 64 * MIB, "runpod")
# Slack and Alertmanager answer "ok", a few kB of JSON (chat.postMessage echoes the message
# it posted, under 100 kB at Slack's 50 blocks), or an error of a few hundred bytes.
SINK_LIMITS = BodyLimits(1 * MIB, 1 * MIB)


class BodyError(ValueError):
    """An answer body we will not use: over a cap, or not decodable as its
    Content-Encoding says. The message names the cap or the encoding."""


def size(n: int) -> str:
    """`n` bytes for a message: 32 MiB, 512 KiB, 100 bytes."""
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= factor and n % factor == 0:
            return f"{n // factor} {unit}"
    return f"{n:,} bytes"


class _Inflater:
    """gzip or deflate undone chunk by chunk, never more than `limit` bytes of output."""

    def __init__(self, encoding: str, limits: BodyLimits) -> None:
        self.encoding = encoding
        self.limits = limits
        self.limit = limits.max_decoded_bytes
        self.produced = 0
        self._d: Any = None  # zlib's decompressobj; made on the first byte (deflate sniffs it)

    def _new(self, first: int) -> Any:
        if self.encoding == "gzip":
            return zlib.decompressobj(16 + zlib.MAX_WBITS)
        # "deflate" is the zlib format (RFC 9110), but some servers send raw deflate: a
        # zlib stream starts with a CMF byte whose low nibble is 8
        return zlib.decompressobj(zlib.MAX_WBITS if first & 0x0F == 8 else -zlib.MAX_WBITS)

    def feed(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        while data:
            if self._d is None:
                self._d = self._new(data[0])
            elif self._d.eof:
                if self.encoding != "gzip":
                    raise BodyError("deflate body has data after the end of its stream")
                self._d = self._new(data[0])  # the next member of a multi-member gzip
            # one byte over the cap tells "too big" from "exactly the cap"; pieces of at
            # most INFLATE_STEP, as zlib holds a piece twice while it makes it
            room = min(self.limit - self.produced + 1, INFLATE_STEP)
            try:
                piece = self._d.decompress(data, room)
            except zlib.error as exc:
                raise BodyError(f"{self.encoding} body does not decode: {exc}") from None
            self.produced += len(piece)
            if self.produced > self.limit:
                raise BodyError("body inflates past "
                                + self.limits.cap(self.limit, "max_decoded_bytes"))
            out.append(piece)
            data = self._d.unconsumed_tail or self._d.unused_data
        return out

    def finish(self) -> None:
        if self._d is None or not self._d.eof:
            raise BodyError(f"{self.encoding} body ends before its stream does")


def _encoding(header: str | None) -> str | None:
    """None for an identity body, else "gzip" or "deflate"; BodyError for anything else."""
    if not header:
        return None  # most answers: no Content-Encoding at all
    codings = [c.strip().lower() for c in header.split(",")]
    codings = [c for c in codings if c and c != "identity"]
    if not codings:
        return None
    if len(codings) == 1 and codings[0] in ("gzip", "x-gzip", "deflate"):
        return "deflate" if codings[0] == "deflate" else "gzip"
    # named only when it looks like coding names: a server may echo anything here, the
    # caller's secrets included, and a cut one would escape their scrubbing
    shown = ", ".join(codings)
    named = repr(shown) if len(shown) <= 24 and _CODING_NAMES.fullmatch(shown) else "(unknown)"
    raise BodyError(f"Content-Encoding {named} not supported (we ask for {ACCEPT_ENCODING})")


def _wire_cap(
    limits: BodyLimits, encoding: str | None, content_length: str | None
) -> tuple[int, str]:
    """The most raw bytes the answer may have, and the setting that says so; BodyError for
    a Content-Length over it (before reading any of the body)."""
    wire_cap, key = limits.max_answer_bytes, "max_answer_bytes"
    if encoding is None and limits.max_decoded_bytes < wire_cap:
        wire_cap, key = limits.max_decoded_bytes, "max_decoded_bytes"
    declared = (content_length or "").strip()
    if declared.isdigit() and int(declared) > wire_cap:
        raise BodyError(f"Content-Length {int(declared):,} is over {limits.cap(wire_cap, key)}")
    return wire_cap, key


def decode_capped(
    raw: bytes,
    *,
    limits: BodyLimits,
    content_encoding: str | None = None,
    content_length: str | None = None,
) -> bytes:
    """`read_capped` for a raw body already in memory (read in one go because its
    Content-Length was within the caps): the same caps, the same BodyErrors."""
    encoding = _encoding(content_encoding)
    wire_cap, key = _wire_cap(limits, encoding, content_length)
    if len(raw) > wire_cap:
        raise BodyError(f"body is over {limits.cap(wire_cap, key)}")
    if encoding is None or not raw:
        return raw
    inflater = _Inflater(encoding, limits)
    out = b"".join(inflater.feed(raw))
    inflater.finish()
    return out


async def iter_capped(
    chunks: AsyncIterable[bytes],
    *,
    limits: BodyLimits,
    content_encoding: str | None = None,
    content_length: str | None = None,
) -> AsyncIterator[bytes]:
    """The decoded body from the raw `chunks`, piece by piece (for a streamed answer), until
    the end or a cap: BodyError past `limits`, for a Content-Length over the wire cap
    (before reading any of it), or for a Content-Encoding other than gzip or deflate."""
    encoding = _encoding(content_encoding)
    wire_cap, key = _wire_cap(limits, encoding, content_length)
    inflater = _Inflater(encoding, limits) if encoding else None
    read = 0
    async for chunk in chunks:
        read += len(chunk)
        if read > wire_cap:
            raise BodyError(f"body is over {limits.cap(wire_cap, key)}")
        if inflater is None:
            yield chunk
        else:
            for piece in inflater.feed(chunk):
                yield piece
    if inflater is not None and read:
        inflater.finish()


async def read_capped(
    chunks: AsyncIterable[bytes],
    *,
    limits: BodyLimits,
    content_encoding: str | None = None,
    content_length: str | None = None,
) -> bytes:
    """The whole decoded body from the raw `chunks` (`iter_capped`, joined)."""
    parts = [piece async for piece in iter_capped(
        chunks, limits=limits, content_encoding=content_encoding,
        content_length=content_length)]
    return b"".join(parts)


class CappedResponse(aiohttp.ClientResponse):
    """An aiohttp response whose `read()` (and so `text()` and `json()`) goes through
    `read_capped` with the session's limits (see `capped_session`)."""

    limits: BodyLimits = RUNPOD_BODY_LIMITS

    async def read(self) -> bytes:
        if self._body is None:
            headers = self.headers
            length = headers.get("Content-Length")
            encoding = headers.get("Content-Encoding")
            limits = self.limits
            try:
                if length is not None and length.isdigit() and int(length) <= min(
                        limits.max_answer_bytes, limits.max_decoded_bytes):
                    # aiohttp's parser stops at Content-Length: one read is bounded by it,
                    # and cheaper than a stream of chunks for the small answers most get
                    self._body = decode_capped(
                        await self.content.read(), limits=limits,
                        content_encoding=encoding, content_length=length)
                else:
                    self._body = await read_capped(
                        self.content.iter_chunked(READ_CHUNK), limits=limits,
                        content_encoding=encoding, content_length=length)
            except BaseException:
                self.close()  # the rest of the body is not read: the connection cannot be reused
                raise
        return await super().read()  # the body is set: aiohttp's release bookkeeping only


@functools.cache
def _response_class(limits: BodyLimits) -> type[CappedResponse]:
    return type("CappedResponse", (CappedResponse,), {"limits": limits})


def capped_session(limits: BodyLimits, **kwargs: Any) -> aiohttp.ClientSession:
    """An aiohttp session whose answers' bodies are read through `read_capped` (aiohttp's
    own decompression off; Accept-Encoding: gzip, deflate); `kwargs` go to ClientSession."""
    headers = {"Accept-Encoding": ACCEPT_ENCODING, **dict(kwargs.pop("headers", None) or {})}
    return aiohttp.ClientSession(
        response_class=_response_class(limits), auto_decompress=False, headers=headers,
        **kwargs,
    )
