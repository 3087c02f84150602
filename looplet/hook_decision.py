"""Deprecated (removal in 0.7): looplet 0.4.1's ``looplet.hook_decision`` module. Decisions live in ``looplet.hooks``.

Its old names resolve through :mod:`looplet.compat`: a deprecated alias, or an error that says what
to use in 0.5 (see docs/migration.md).
"""

from looplet.compat import module_getattr

__getattr__ = module_getattr(
    "looplet.hook_decision",
    ("HookDecision", "Allow", "Deny", "Block", "Stop", "Continue", "InjectContext", "RewriteThread"),
)
