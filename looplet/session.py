"""Deprecated (removal in 0.7): looplet 0.4.1's ``looplet.session`` module. The session log is now the run's list of chat messages.

``SessionLog`` and ``LogEntry`` still work (``looplet._compat_session``, a warning when a log is made);
see docs/migration.md.
"""

from looplet._compat_session import LogEntry as LogEntry
from looplet._compat_session import SessionLog as SessionLog
