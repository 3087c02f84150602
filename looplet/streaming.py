"""Deprecated (removal in 0.7): looplet 0.4.1's ``looplet.streaming`` module, kept so code that imports it loads.

Its names resolve through :mod:`looplet.compat` (``OLD_MODULES``): a deprecated alias, or a placeholder
that raises an error saying what to use in 0.5 (see docs/migration.md).
"""

from looplet.compat import module_getattr

__getattr__ = module_getattr(__name__)
