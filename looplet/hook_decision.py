"""Deprecated (removal in 0.7): looplet 0.4.1's ``looplet.hook_decision`` module. Decisions live in ``looplet.hooks``.

Its old names resolve through :mod:`looplet.compat`: a deprecated alias, or an error that says what
to use in 0.5 (see docs/migration.md).
"""

from typing import Any

from looplet.compat import module_getattr

_OLD = module_getattr(
    "looplet.hook_decision",
    ("HookDecision", "Allow", "Deny", "Block", "Stop", "Continue", "InjectContext", "RewriteThread"),
)


def __getattr__(name: str) -> Any:
    if name in ("normalize_hook_return", "hook_effect_fields"):  # still work: looplet._compat_hooks
        from looplet import _compat_hooks

        return getattr(_compat_hooks, name)
    return _OLD(name)
