"""Errors looplet raises. Each message says what went wrong and what to do next."""

from __future__ import annotations

from typing import Any


class LoopletError(Exception):
    """Base class of looplet's own errors."""


class LLMError(LoopletError):
    """A backend call failed. ``retryable`` errors (429, 5xx, timeouts) are retried with backoff."""

    def __init__(
        self,
        message: str,
        *,
        retryable: bool = False,
        status: int | None = None,
        retry_after: float | None = None,
        kind: str | None = None,
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status
        self.retry_after = retry_after
        self.kind = kind or (f"http_{status}" if status else type(self).__name__)


class LLMResponsesExhausted(LLMError):
    """A ``MockLLMBackend`` with ``cycle=False`` was asked for more answers than its script holds."""


class HookError(LoopletError):
    """A hook raised while ``LoopConfig(strict_hooks=True)``; the original is ``__cause__``."""


class MissingExtra(LoopletError, ImportError):
    """An optional integration was used without its extra installed."""

    def __init__(self, module: str, extra: str) -> None:
        super().__init__(f"{module} is not installed; install it with: pip install 'looplet[{extra}]'")
        self.module = module
        self.extra = extra


def require(module: str, extra: str) -> Any:
    """Import ``module`` or raise :class:`MissingExtra` naming the extra that provides it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtra(module.split(".")[0], extra) from exc
