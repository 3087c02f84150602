"""Runnable examples: ``python -m looplet.examples.NAME`` (add ``--scripted`` to run without a key).

* ``hello_world`` — the smallest agent: one tool, a step line per call.
* ``coding_agent`` — bash, read, write, edit and grep confined to a workspace folder; ``--trace DIR``.
* ``data_agent`` — approval on destructive tools, compaction, checkpoints and ``--resume``.

Each module also has an ``agent(...)`` factory for ``looplet run looplet.examples.NAME:agent "task"``.
"""
