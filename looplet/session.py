"""Deprecated (removal in 0.7): looplet 0.4.1's ``looplet.session`` module. The session log is now the run's list of chat messages.

Its old names resolve through :mod:`looplet.compat`: a deprecated alias, or an error that says what
to use in 0.5 (see docs/migration.md).
"""

from looplet.compat import module_getattr

__getattr__ = module_getattr("looplet.session", ("SessionLog",))
