"""What the tests of looplet 0.4.1's names (tests/unit/test_compat*.py) share."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def one_warning(*words: str) -> Iterator[None]:
    """Exactly one DeprecationWarning, naming each of ``words`` and the removal version, raised at a line
    of the file whose ``with`` block this is (the caller's, not looplet's)."""
    caller = sys._getframe(2).f_code.co_filename  # 0: this generator, 1: contextmanager's __enter__
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    deps = [w for w in caught if issubclass(w.category, DeprecationWarning)]
    assert len(deps) == 1, [str(w.message) for w in deps]
    message = str(deps[0].message)
    for word in (*words, "0.7"):
        assert word in message, message
    assert deps[0].filename == caller, (deps[0].filename, message)


@contextmanager
def quiet() -> Iterator[None]:
    """Deprecated names used without their warning (each is checked once, with ``one_warning``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield
