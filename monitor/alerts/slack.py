"""The Slack sink: Block Kit messages through an incoming webhook or a bot token.

- Webhook (`alerts.slack.webhook_url`): `AsyncWebhookClient(url).send_dict(...)`; Slack
  answers 200 "ok". Bot token (`bot_token` + `channel`): `AsyncWebClient.chat_postMessage`;
  `base_url` points it elsewhere (tests).
- Retries inside one delivery: slack_sdk's connection-error handler, and its rate-limit
  handler, which sleeps for the 429's Retry-After before trying again (only for waits up
  to `max_inline_wait_s`; a longer one, or a 429 after the retries, goes back to the
  outbox with that Retry-After, which holds the sink until then).
- At most `max_per_second` messages per second (Slack: about 1 per second per channel);
  one sink posts to one channel.
- If Slack refuses a message's content (invalid_blocks, msg_too_long, ...), it is sent
  once more as plain text; only a refusal of that is permanent.
- Slack's answers are read through a `monitor.bodies.capped_session` handed to slack_sdk's
  clients, so a huge or endless answer costs at most `SINK_LIMITS` (a failed delivery).
- The webhook URL and the bot token never appear in a log line or an exception: errors
  are re-raised as DeliveryError with the secret scrubbed and without their cause, and
  slack_sdk's own logger (which logs the URL at debug level) is silenced.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from monitor.alerts.message import (
    TRUNCATED,
    code_split,
    plain_text,
    proposed_lines,
    truncate,
    worst,
)
from monitor.alerts.model import DeliveryError, Message, Notification, Sink
from monitor.bodies import SINK_LIMITS, capped_session
from rules.diagnosis import Diagnosis
from rules.log_evidence import EVIDENCE_KEY as LOGS_KEY
from rules.log_evidence import excerpt, excerpt_title
from rules.signals import minutes

# Slack's limits (Block Kit reference)
HEADER_LIMIT = 150
SECTION_TEXT_LIMIT = 3000
FIELD_LIMIT = 2000
# a phone-sized excerpt of the worker's log lines; the whole set is on the page and the API
LOG_EXCERPT_LINES = 5
LOG_EXCERPT_CHARS = 200
FIELDS_PER_SECTION = 10
CONTEXT_TEXT_LIMIT = 2000
MAX_BLOCKS = 50
FALLBACK_LIMIT = 3000  # the plain-text retry's `text`

GREEN = "#2EB67D"
SEVERITY_EMOJI = {"critical": ":red_circle:", "warning": ":large_orange_circle:",
                  "info": ":large_blue_circle:"}
HEADER_EMOJI = {"critical": ":rotating_light:", "warning": ":warning:",
                "info": ":information_source:"}
# Slack errors that mean "this message's content", not "this channel" or "this token"
CONTENT_ERRORS = frozenset({
    "invalid_blocks", "invalid_blocks_format", "msg_too_long", "msg_blocks_too_long",
    "invalid_attachments", "too_many_attachments", "invalid_payload", "no_text",
    "invalid_arguments",
})


def _quiet_logger() -> logging.Logger:
    """A logger for slack_sdk that never writes: it would log the webhook URL at debug."""
    logger = logging.getLogger("monitor.alerts.slack_sdk")
    logger.setLevel(logging.CRITICAL)
    logger.propagate = False
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())
    return logger


# --------------------------------------------------------------------------- Block Kit


def _plain(text: str, limit: int) -> dict[str, Any]:
    return {"type": "plain_text", "text": truncate(text, limit), "emoji": True}


def _mrkdwn(text: str, limit: int) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": truncate(text, limit)}


def _escape(text: str) -> str:
    """Slack mrkdwn control characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, list | tuple):
        return "; ".join(_value(x) for x in v)
    if isinstance(v, Mapping):
        return json.dumps(v, ensure_ascii=False, default=str)
    return str(v)


def _when(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M UTC")


def remedy_mrkdwn(remedy: str) -> list[str]:
    """The remedy as mrkdwn chunks (each within a section's limit): prose as text,
    mutations and curl commands in code blocks. A chunk cut short says so."""
    parts: list[tuple[str, str]] = []  # ("text" | "code", content)
    for line in remedy.splitlines():
        prose, code = code_split(line)
        if prose:
            parts.append(("text", _escape(prose)))
        if code:  # Slack decodes &amp; &lt; &gt; inside code blocks too
            code = _escape(code)
            if parts and parts[-1][0] == "code":
                parts[-1] = ("code", parts[-1][1] + "\n" + code)
            else:
                parts.append(("code", code))
    chunks: list[str] = []
    current = "*Fix*"
    for kind, content in parts:
        piece = f"```{content}```" if kind == "code" else content
        if len(piece) > SECTION_TEXT_LIMIT - 10:
            if kind == "code":
                piece = "```" + truncate(content, SECTION_TEXT_LIMIT - 16) + "```"
            else:
                piece = truncate(content, SECTION_TEXT_LIMIT - 10)
        if len(current) + 1 + len(piece) > SECTION_TEXT_LIMIT:
            chunks.append(current)
            current = piece
        else:
            current = f"{current}\n{piece}"
    chunks.append(current)
    return chunks


def _evidence_fields(evidence: Mapping[str, Any]) -> list[list[dict[str, Any]]]:
    fields = [_mrkdwn(f"*{_escape(str(k))}*\n{_escape(_value(v))}", FIELD_LIMIT)
              for k, v in evidence.items() if k != LOGS_KEY]
    return [fields[i:i + FIELDS_PER_SECTION] for i in range(0, len(fields), FIELDS_PER_SECTION)]


def _log_excerpt(evidence: Mapping[str, Any]) -> str:
    """A few of the worker's log lines (matched, or the last ones) under their title."""
    title = excerpt_title(evidence)
    if not title:
        return ""
    lines = excerpt(evidence, max_lines=LOG_EXCERPT_LINES, max_chars=LOG_EXCERPT_CHARS)
    text = f"*{_escape(title)}*"
    if lines:
        text += "\n```" + _escape("\n".join(lines)) + "```"
    return text


def _where(d: Diagnosis) -> str:
    if d.endpoint_id is None:
        return "the account"
    return d.endpoint_name or d.endpoint_id


def _incident_blocks(n: Notification, t: float) -> list[dict[str, Any]]:
    d = n.incident.diagnosis
    lead = f"{SEVERITY_EMOJI.get(d.severity, '')} *{d.code}* · {d.severity}"
    if n.kind == "reminder":
        lead += f" · active for {minutes(t - n.incident.since)}"
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": _mrkdwn(f"{lead}\n{_escape(d.summary)}", SECTION_TEXT_LIMIT)}
    ]
    blocks += [{"type": "section", "fields": group} for group in _evidence_fields(d.evidence)]
    logs = _log_excerpt(d.evidence)
    if logs:
        blocks.append({"type": "section", "text": _mrkdwn(logs, SECTION_TEXT_LIMIT)})
    blocks += [{"type": "section", "text": _mrkdwn(chunk, SECTION_TEXT_LIMIT)}
               for chunk in remedy_mrkdwn(d.remedy)]
    return blocks


def firing_blocks(message: Message) -> list[dict[str, Any]]:
    """Block Kit for a firing or reminder message: header, where, then per incident its
    summary, evidence fields and remedy; never more than Slack's 50 blocks."""
    ds = [i.diagnosis for i in message.incidents]
    top = worst(ds)
    what = ds[0].code if len(ds) == 1 else f"{len(ds)} problems"
    prefix = "Still firing · " if message.kind == "reminder" else ""
    header = f"{HEADER_EMOJI.get(top, '')} {prefix}{top.upper()} · {what} on {_where(ds[0])}"
    first = ds[0]
    where = (
        "Account-wide" if first.endpoint_id is None
        else f"Endpoint *{_escape(first.endpoint_name or first.endpoint_id)}* · "
             f"`{first.endpoint_id}`"
    )
    since = min(i.since for i in message.incidents)
    context = f"{where} · since {_when(since)} · runpod-monitor"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": _plain(header, HEADER_LIMIT)},
        {"type": "context", "elements": [_mrkdwn(context, CONTEXT_TEXT_LIMIT)]},
    ]
    shown, cut = 0, False
    for i, n in enumerate(message.notifications):
        part = ([{"type": "divider"}] if i else []) + _incident_blocks(n, message.t)
        if len(blocks) + len(part) > MAX_BLOCKS:
            # keep one block free for the note; the first incident is shown in part
            if shown == 0:
                blocks += part[: MAX_BLOCKS - 1 - len(blocks)]
                shown, cut = 1, True
            break
        blocks += part
        shown += 1
    hidden = len(message.notifications) - shown
    if hidden > 0 or cut:
        note = (f"{hidden} more diagnos{'i' if hidden == 1 else 'e'}s not shown"
                if hidden > 0 else "evidence and remedy cut")
        blocks = blocks[: MAX_BLOCKS - 1]
        blocks.append({"type": "context", "elements": [
            _mrkdwn(f"{note} {TRUNCATED}; see /api/v1/diagnoses", CONTEXT_TEXT_LIMIT)]})
    return blocks


def resolved_blocks(message: Message) -> list[dict[str, Any]]:
    """One short section: what ended, where, after how long."""
    lines = []
    for n in message.notifications:
        d = n.incident.diagnosis
        end = n.incident.resolved_at if n.incident.resolved_at is not None else message.t
        why = f" (now explained by `{n.note}`)" if n.note else ""
        where = "the account" if d.endpoint_id is None else (
            f"*{_escape(d.endpoint_name or d.endpoint_id)}* (`{d.endpoint_id}`)")
        lines.append(f":white_check_mark: *Resolved* · `{d.code}` on {where} after "
                     f"{minutes(max(0.0, end - n.incident.since))}{why}")
        lines += [_escape(line) for line in proposed_lines(d)]
    return [{"type": "section", "text": _mrkdwn("\n".join(lines), SECTION_TEXT_LIMIT)}]


def render(message: Message) -> dict[str, Any]:
    """The chat.postMessage / webhook body: `text` (the short fallback a phone's lock screen
    shows) and Block Kit, which carries the remedy; a resolved message is one green-barred
    attachment."""
    body: dict[str, Any] = {"text": message.text}
    if message.kind == "resolved":
        body["attachments"] = [{"color": GREEN, "blocks": resolved_blocks(message),
                                "fallback": message.text}]
    else:
        body["blocks"] = firing_blocks(message)
    return body


# --------------------------------------------------------------------------- delivery


def _retry_after(headers: Mapping[str, Any] | None) -> float | None:
    if not headers:
        return None
    for key, value in headers.items():
        if str(key).lower() == "retry-after":
            raw = value[0] if isinstance(value, list | tuple) and value else value
            try:
                return max(0.0, float(str(raw)))
            except ValueError:
                return None
    return None


class BoundedRateLimitRetryHandler(AsyncRateLimitErrorRetryHandler):
    """slack_sdk's rate-limit handler (sleeps Retry-After, then retries), only for waits
    up to `max_wait_s`: a longer wait is the outbox's job, so a delivery never hangs."""

    def __init__(self, max_retry_count: int = 2, max_wait_s: float = 30.0) -> None:
        super().__init__(max_retry_count=max_retry_count)
        self.max_wait_s = max_wait_s

    async def _can_retry_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if response is None or response.status_code != 429:
            return False
        wait = _retry_after(response.headers)
        return wait is None or wait <= self.max_wait_s


class SlackSink(Sink):
    """Posts messages to one Slack channel."""

    mode = "messages"

    def __init__(
        self,
        *,
        webhook_url: str | None = None,
        bot_token: str | None = None,
        channel: str | None = None,
        base_url: str = "https://slack.com/api/",
        name: str = "slack",
        min_severity: str = "warning",
        max_per_second: float = 1.0,
        timeout_s: float = 10.0,
        rate_limit_retries: int = 2,
        max_inline_wait_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if (webhook_url is None) == (bot_token is None):
            raise ValueError("give a webhook URL or a bot token (and channel), not both")
        if bot_token is not None and not channel:
            raise ValueError("a bot token needs a channel")
        self.name = name
        self.min_severity = min_severity
        self.channel = channel
        self.min_gap_s = 1.0 / max_per_second
        self._clock = clock
        self._sleep = sleep
        self._last_post: float | None = None
        self._secrets = [s for s in (webhook_url, bot_token) if s]
        if webhook_url is not None:
            # the path of a webhook URL is its secret; scrub it alone too
            path = webhook_url.split("://", 1)[-1].partition("/")[2]
            if len(path) >= 8:
                self._secrets.append(path)
        handlers: list[AsyncRetryHandler] = [
            AsyncConnectionErrorRetryHandler(max_retry_count=1),
            BoundedRateLimitRetryHandler(rate_limit_retries, max_inline_wait_s),
        ]
        logger = _quiet_logger()
        self._timeout_s = max(1, round(timeout_s))
        self._webhook: AsyncWebhookClient | None = None
        self._web: AsyncWebClient | None = None
        if webhook_url is not None:
            self._webhook = AsyncWebhookClient(
                webhook_url, timeout=self._timeout_s, logger=logger,
                retry_handlers=handlers,
            )
        else:
            self._web = AsyncWebClient(
                token=bot_token, base_url=base_url, timeout=self._timeout_s,
                logger=logger, retry_handlers=handlers,
            )

    def __repr__(self) -> str:  # never the URL or the token
        how = "webhook" if self._webhook is not None else f"bot to {self.channel}"
        return f"SlackSink({self.name!r}, {how})"

    def scrub(self, text: str) -> str:
        for secret in sorted(self._secrets, key=len, reverse=True):
            text = text.replace(secret, "****")
        return text

    async def _throttle(self) -> None:
        if self._last_post is not None:
            wait = self._last_post + self.min_gap_s - self._clock()
            if wait > 0:
                await self._sleep(wait)

    async def send(self, message: Message) -> None:
        """Post `message`; on a content refusal, once more as plain text."""
        try:
            await self._post(render(message))
        except DeliveryError as exc:
            if exc.permanent:
                full = plain_text(message.kind, message.notifications, message.t)
                await self._post({"text": truncate(full, FALLBACK_LIMIT)})
                return
            raise

    async def _post(self, body: dict[str, Any]) -> None:
        await self._throttle()
        try:
            # slack_sdk reads Slack's answer itself: hand it a session whose answers are
            # capped, for this post only (as the session it would make for itself)
            async with capped_session(
                SINK_LIMITS, timeout=aiohttp.ClientTimeout(total=self._timeout_s)
            ) as http:
                client = self._webhook or self._web
                if client is not None:
                    client.session = http
                try:
                    if self._webhook is not None:
                        await self._post_webhook(body)
                    else:
                        await self._post_web(body)
                finally:
                    if client is not None:
                        client.session = None
        except DeliveryError:
            raise
        except SlackApiError as exc:
            raise self._api_error(exc) from None
        except (SlackClientError, OSError, TimeoutError) as exc:
            raise DeliveryError(self.scrub(f"{type(exc).__name__}: {exc}")[:300]) from None
        except Exception as exc:  # aiohttp errors and the like: their text may hold the URL
            raise DeliveryError(self.scrub(f"{type(exc).__name__}: {exc}")[:300]) from None
        finally:
            # spaced from the answer, not the send: Slack counts arrivals, and a request
            # delayed on the way would otherwise arrive under min_gap_s after the next one
            self._last_post = self._clock()

    async def _post_webhook(self, body: dict[str, Any]) -> None:
        if self._webhook is None:
            raise DeliveryError("no Slack webhook client", permanent=True)
        resp = await self._webhook.send_dict(body)
        if resp.status_code == 200:
            return
        text = self.scrub(str(resp.body or ""))[:200]
        reason = f"Slack webhook answered {resp.status_code}: {text}"
        if resp.status_code == 429:
            raise DeliveryError(reason, retry_after=_retry_after(dict(resp.headers)) or 1.0,
                                status=429)
        content = resp.status_code == 400 or text.strip() in CONTENT_ERRORS
        raise DeliveryError(reason, permanent=content, status=resp.status_code)

    async def _post_web(self, body: dict[str, Any]) -> None:
        if self._web is None or self.channel is None:
            raise DeliveryError("no Slack client for a bot token", permanent=True)
        await self._web.chat_postMessage(channel=self.channel, **body)

    def _api_error(self, exc: SlackApiError) -> DeliveryError:
        resp = exc.response
        status = getattr(resp, "status_code", None)
        error = ""
        try:
            error = str(resp.get("error") or "")
        except (AttributeError, TypeError, ValueError):
            error = ""
        reason = self.scrub(f"Slack chat.postMessage answered {status}: {error or 'error'}")
        if status == 429 or error == "ratelimited":
            headers = getattr(resp, "headers", None)
            return DeliveryError(reason, retry_after=_retry_after(headers) or 1.0, status=429)
        return DeliveryError(reason, permanent=error in CONTENT_ERRORS, status=status)

    async def close(self) -> None:
        return None

