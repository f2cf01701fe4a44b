"""Typed answers of the RunPod client: a value or a classified failure, never an exception."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeAlias, TypeVar

from model.observation import Account, EndpointConfig

T = TypeVar("T")
# covariant so an Ok[Health] is an Ok[object]: callers can treat results generically
T_co = TypeVar("T_co", covariant=True)


@dataclass(frozen=True, slots=True)
class RateHeaders:
    """The raw REST v2 quota headers of one answer, as sent (None when absent: the data
    plane and GraphQL send none, and v2 leaves them out for rate-limit-exempt callers).
    `monitor.pipeline.budget` parses them; the client only carries them."""

    rate_limit: str | None = None  # `RateLimit: "minute";r=<left>;t=<s to reset>, ...`
    rate_limit_policy: str | None = None  # `RateLimit-Policy: "minute";q=<quota>;w=60, ...`
    request_id: str | None = None  # `x-request-id`, to quote to RunPod support

    @classmethod
    def of(cls, headers: Mapping[str, str]) -> RateHeaders | None:
        """The three headers of `headers` (case-insensitive mapping), None when none is set."""
        limit, policy = headers.get("RateLimit"), headers.get("RateLimit-Policy")
        request_id = headers.get("x-request-id")
        if limit is None and policy is None and request_id is None:
            return None
        return cls(limit, policy, request_id)


@dataclass(frozen=True, slots=True)
class Ok(Generic[T_co]):
    """A call that returned usable data; `rate`: the answer's quota headers (REST v2)."""

    value: T_co
    status: int = 200
    elapsed_s: float = 0.0
    rate: RateHeaders | None = None


@dataclass(frozen=True, slots=True)
class Failure:
    """A call that gave no usable data; `kind` is one of `model.observation.FAILURE_KINDS`,
    or `model.observation.RETIRED` for a GraphQL that answered that it is gone. `rate`: the
    answer's quota headers (REST v2), None when no answer came or it had none."""

    kind: str
    status: int = 0
    retry_after_s: float | None = None
    message: str = ""
    elapsed_s: float = 0.0
    rate: RateHeaders | None = None


Result: TypeAlias = Ok[T] | Failure


@dataclass(slots=True)
class Answer:
    """An HTTP answer, whatever carried it (the client's transports fill it in).

    Not frozen: one is made per request, and a frozen dataclass's __init__ costs 2.5 us
    against 0.6 (each field through object.__setattr__); the client completes it (elapsed
    time, scrubbed quota headers) before anything else sees it, and nothing changes it
    after."""

    status: int
    reason: str
    retry_after: str | None
    content: bytes
    rate: RateHeaders | None = None
    content_type: str = ""
    elapsed_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Myself:
    """GraphQL `myself`: the account, its endpoints, and any partial-data error messages.

    `account` is None when the balance or spend was not returned (restricted key, or a
    query that left them out): unknown is never zero. `endpoints_listed` is False when
    GraphQL gave no endpoint list, so an empty `endpoints` then means "unknown", not "none".
    """

    account: Account | None
    endpoints: tuple[EndpointConfig, ...]
    errors: tuple[str, ...] = ()
    endpoints_listed: bool = True


# -- REST v2 answers that have no type in model/ --------------------------------------------


@dataclass(frozen=True, slots=True)
class Balance:
    """The v2 balance route: USD, and PREPAID | POSTPAID (None when the answer omits it)."""

    amount: float
    billing_mode: str | None = None


@dataclass(frozen=True, slots=True)
class AccountLimits:
    """The v2 account-limits route. Its inner field names are UNCONFIRMED (spec 2.1): each
    value is None when the answer does not carry it under the name we read."""

    spend_limit: float | None = None  # `spendRate.limit`, USD per hour
    spend_current: float | None = None  # `spendRate.current`, USD per hour
    workers_limit: int | None = None  # `serverlessWorkers.limit`
    workers_current: int | None = None  # `serverlessWorkers.current`


@dataclass(frozen=True, slots=True)
class ServerlessSpend:
    """Serverless spend from the last COMPLETE hour bucket of `/billing/serverless` (the
    in-progress bucket is never used: its charges are still arriving).

    `per_endpoint`: USD in that hour (so USD/h) by endpoint id; `total_per_hr` their sum;
    `bucket_start`/`bucket_end` unix seconds. All None/empty when no complete bucket was
    in the answer."""

    per_endpoint: Mapping[str, float] = field(default_factory=dict)
    total_per_hr: float | None = None
    bucket_start: float | None = None
    bucket_end: float | None = None
