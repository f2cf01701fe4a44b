"""Typed answers of the RunPod client: a value or a classified failure, never an exception."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeAlias, TypeVar

from model.observation import Account, EndpointConfig

T = TypeVar("T")
# covariant so an Ok[Health] is an Ok[object]: callers can treat results generically
T_co = TypeVar("T_co", covariant=True)


@dataclass(frozen=True, slots=True)
class Ok(Generic[T_co]):
    """A call that returned usable data."""

    value: T_co
    status: int = 200
    elapsed_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Failure:
    """A call that gave no usable data; `kind` is one of `model.observation.FAILURE_KINDS`."""

    kind: str
    status: int = 0
    retry_after_s: float | None = None
    message: str = ""
    elapsed_s: float = 0.0


Result: TypeAlias = Ok[T] | Failure


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
