"""Token-shaped secrets: find them in text and mask them down to a harmless prefix.

Used by the template audit (`secret_in_template`) and by log redaction. A secret is shown
only as its kind and a masked prefix such as ``ghp_****``; nothing after the prefix is
ever kept. Patterns need a long token body so that ordinary values (``hf_transfer``,
``/runpod-volume/hf_cache``) are not taken for tokens.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass

STARS = "****"

GITHUB = "GitHub token"
HUGGING_FACE = "Hugging Face token"
AWS = "AWS access key"
SLACK = "Slack token"
SLACK_WEBHOOK = "Slack webhook URL"
URL_PASSWORD = "URL with a password"  # noqa: S105 (a kind name)
RUNPOD = "RunPod API key"

KINDS: tuple[str, ...] = (GITHUB, HUGGING_FACE, AWS, SLACK, SLACK_WEBHOOK, URL_PASSWORD, RUNPOD)


@dataclass(frozen=True, slots=True)
class Found:
    """One secret: its kind and the masked form that may be shown (``ghp_****``)."""

    kind: str
    masked: str


# Each pattern has a `keep` group (shown) followed by a `secret` group (replaced by ****).
# A token must not continue a word on its left.
_LEFT = r"(?<![A-Za-z0-9])"
_TOKEN_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (GITHUB, re.compile(_LEFT + r"(?P<keep>github_pat_)(?P<secret>[A-Za-z0-9_]{22,})")),
    (GITHUB, re.compile(_LEFT + r"(?P<keep>gh[opusr]_)(?P<secret>[A-Za-z0-9]{30,})")),
    (HUGGING_FACE, re.compile(_LEFT + r"(?P<keep>hf_)(?P<secret>[A-Za-z0-9]{30,})")),
    (AWS, re.compile(_LEFT + r"(?P<keep>AKIA|ASIA)(?P<secret>[A-Z0-9]{16})(?![A-Za-z0-9])")),
    (SLACK, re.compile(_LEFT + r"(?P<keep>xox[abpr]-)(?P<secret>[A-Za-z0-9][A-Za-z0-9-]{9,})")),
    (RUNPOD, re.compile(_LEFT + r"(?P<keep>rpa_)(?P<secret>[A-Za-z0-9]{20,})")),
)
_SLACK_WEBHOOK = re.compile(
    r"(?P<keep>https?://hooks\.slack\.com/services/)(?P<secret>[A-Za-z0-9_/-]+)"
)
# scheme://user:password@host — the password is the secret; the user and host are kept.
_URL_PASSWORD = re.compile(
    r"(?P<keep>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@'\"]+:)(?P<secret>[^\s/'\"]+)"
    r"(?=@(?P<host>[^\s/:'\"?#@]*))"
)


@dataclass(frozen=True, slots=True)
class _Match:
    start: int  # where the secret (not the kept prefix) starts
    end: int
    kind: str
    masked: str
    replacement: str


def _token_at_start(text: str) -> tuple[str, str] | None:
    """The (kind, kept prefix) of a token that starts `text`, if one does."""
    for kind, pattern in _TOKEN_PATTERNS:
        m = pattern.match(text)
        if m is not None:
            return kind, m.group("keep")
    return None


# The same template texts come back every cycle (the audit rules, the store's masking):
# scanning one costs every pattern's regex, a cached answer one dict lookup.
@functools.lru_cache(maxsize=16384)
def _matches(text: str) -> tuple[_Match, ...]:
    """Every secret in `text`, left to right, without overlaps."""
    found: list[_Match] = []
    for m in _URL_PASSWORD.finditer(text):
        keep, host = m.group("keep"), m.group("host") or ""
        token = _token_at_start(m.group("secret"))
        kind, prefix = (URL_PASSWORD, "") if token is None else token
        found.append(
            _Match(
                m.start("secret"), m.end("secret"), kind,
                f"{keep}{prefix}{STARS}@{host}", prefix + STARS,
            )
        )
    for m in _SLACK_WEBHOOK.finditer(text):
        keep = m.group("keep")
        found.append(
            _Match(m.start("secret"), m.end("secret"), SLACK_WEBHOOK, keep + STARS, STARS)
        )
    for kind, pattern in _TOKEN_PATTERNS:
        for m in pattern.finditer(text):
            keep = m.group("keep")
            found.append(_Match(m.start("secret"), m.end("secret"), kind, keep + STARS, STARS))
    # Earliest first, the widest of those that start together; drop what overlaps a kept one.
    found.sort(key=lambda x: (x.start, -x.end))
    chosen: list[_Match] = []
    for match in found:
        if chosen and match.start < chosen[-1].end:
            continue
        chosen.append(match)
    return tuple(chosen)


def find_secrets(text: str) -> list[Found]:
    """Every token-shaped secret in `text`, as its kind and masked prefix, in order."""
    return [Found(m.kind, m.masked) for m in _matches(text)]


def mask(text: str) -> str:
    """`text` with every token-shaped secret cut down to its masked prefix (``ghp_****``)."""
    matches = _matches(text)
    if not matches:
        return text
    parts: list[str] = []
    pos = 0
    for m in matches:
        parts.append(text[pos : m.start])
        parts.append(m.replacement)
        pos = m.end
    parts.append(text[pos:])
    return "".join(parts)


# The stand-in `placeholder` writes over a secret's body: letters and digits only, so it
# keeps every pattern's shape (an AWS key's 16 upper-case characters included).
FILLER = "MASKED"


def placeholder(text: str) -> str:
    """`text` with each secret's body replaced by a stand-in of its length and shape
    (``hf_MASKED0000...``): the audit still finds a token there, nothing of it is kept."""
    matches = _matches(text)
    if not matches:
        return text
    parts: list[str] = []
    pos = 0
    for m in matches:
        parts.append(text[pos : m.start])
        kept = m.replacement[: -len(STARS)]  # a token's prefix inside a URL's password
        n = m.end - m.start - len(kept)
        parts.append(kept + (FILLER + "0" * n)[:n])
        pos = m.end
    parts.append(text[pos:])
    return "".join(parts)


_RUNPOD_SECRET_REF = re.compile(r"^\s*\{\{\s*RUNPOD_SECRET_[A-Za-z0-9_.-]+\s*\}\}\s*$")


def secret_reference(value: str) -> bool:
    """True for a RunPod secret reference (``{{ RUNPOD_SECRET_hf }}``): a name, no secret."""
    return _RUNPOD_SECRET_REF.match(value) is not None


def has_secret(text: str) -> bool:
    """True when `text` holds at least one token-shaped secret."""
    return bool(_matches(text))


# An env key whose value is a credential whatever its shape (HF_TOKEN, AWS_SECRET_ACCESS_KEY,
# DB_PASSWORD, OPENAI_API_KEY): its value is hidden wherever it shows, e.g. in a log line.
_SECRET_KEY = re.compile(
    r"(TOKEN|SECRET|PASSW(?:OR)?D|PASSPHRASE|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY|CREDENTIAL"
    r"|AUTH|(?:^|_)KEY$)", re.IGNORECASE,
)
# shorter values are too likely to be ordinary words ("true", "none", a port) to hide
MIN_VALUE_CHARS = 6


def secret_key(key: str) -> bool:
    """True for an env key that names a credential (``HF_TOKEN``, ``DB_PASSWORD``)."""
    return bool(_SECRET_KEY.search(key))


def secret_values(env: Iterable[tuple[str, str]]) -> frozenset[str]:
    """The values of the secret-looking keys of `env` (key, value pairs) worth hiding:
    long enough, and not already masked or a ``{{ RUNPOD_SECRET_x }}`` reference."""
    return frozenset(
        v for k, v in env
        if secret_key(k) and len(v) >= MIN_VALUE_CHARS and STARS not in v and "{{" not in v
    )


def mask_values(text: str, values: Iterable[str]) -> str:
    """`text` masked (`mask`), then each of the known secret `values` left in it replaced by
    **** (a token-shaped one already shows only its prefix)."""
    text = mask(text)
    for v in sorted(values, key=len, reverse=True):
        if v in text:
            text = text.replace(v, STARS)
    return text
