"""A data agent over a SQLite shop database: approval before destructive tools, compaction of a long
transcript, a checkpoint after every step, and ``--resume``.

    python -m looplet.examples.data_agent --scripted                  # pauses: delete_rows needs approval
    python -m looplet.examples.data_agent --scripted --resume --approve   # (or --refuse) and finishes

The run's folder (``--dir``) holds ``shop.db`` and ``checkpoint/checkpoint.json``. ``delete_rows`` and
``drop_table`` stop the run with ``awaiting_approval`` (``--ask`` asks on the terminal instead); the
checkpoint keeps the waiting call, and ``--resume --approve`` runs exactly that call, without asking the
model again. Ctrl-C ends the run as ``cancelled`` with the checkpoint (and ``--trace`` trajectory) written;
``--resume`` continues after the last finished step. Old tool outputs are pruned, then the oldest turns
dropped, once the transcript passes ``--compact-at`` tokens.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from looplet.backends.mock import MockLLMBackend
from looplet.config import LoopConfig
from looplet.context import Prune, Summarize, ThresholdCompactHook, Truncate, compact_chain
from looplet.control import ApprovalHook, Checkpoint, CheckpointHook
from looplet.control.checkpoint import FILENAME, PENDING_APPROVAL
from looplet.examples._common import (
    SetupError,
    backend,
    cli,
    exit_code,
    fail,
    parser,
    run,
    trajectory_hook,
)
from looplet.loop import composable_loop
from looplet.state import DefaultState
from looplet.tools import BaseToolRegistry, tool, tools_from
from looplet.types import LLMResponse

__all__ = ["Shop", "shop_tools", "agent", "main", "DESTRUCTIVE"]

DESTRUCTIVE = ("delete_rows", "drop_table")
MAX_ROWS = 200


class Shop:
    """The database the agent works on. Reads go through a read-only connection; writes only through the
    destructive tools (which need approval)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not self.path.exists():
            seed(self.path)

    def _connect(self, readonly: bool) -> sqlite3.Connection:
        if readonly:
            return sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=5.0)
        return sqlite3.connect(self.path, timeout=5.0)

    def tables(self) -> dict[str, int]:
        with self._connect(True) as db:
            names = [
                r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")
            ]
            return {n: db.execute(f'SELECT COUNT(*) FROM "{n}"').fetchone()[0] for n in names}

    def query(self, sql: str) -> dict[str, Any]:
        head = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else ""
        if head not in ("SELECT", "WITH", "PRAGMA", "EXPLAIN"):
            raise ValueError("query() only reads (SELECT/WITH); use delete_rows or drop_table to change data")
        with self._connect(True) as db:
            try:
                cur = db.execute(sql)
            except sqlite3.Error as exc:
                raise ValueError(f"SQL error: {exc}") from None
            cols = [d[0] for d in cur.description or ()]
            rows = cur.fetchmany(MAX_ROWS + 1)
        out: dict[str, Any] = {"columns": cols, "rows": [list(r) for r in rows[:MAX_ROWS]]}
        if len(rows) > MAX_ROWS:
            out["note"] = f"only the first {MAX_ROWS} rows are shown; aggregate or add LIMIT/WHERE"
        return out

    def delete_rows(self, table: str, where: str) -> dict[str, Any]:
        self._known(table)
        if not where.strip():
            raise ValueError("give a WHERE condition; deleting every row is drop_table's job")
        with self._connect(False) as db:
            try:
                n = db.execute(f'DELETE FROM "{table}" WHERE {where}').rowcount
            except sqlite3.Error as exc:
                raise ValueError(f"SQL error: {exc}") from None
        return {"deleted": n, "table": table}

    def drop_table(self, table: str) -> dict[str, Any]:
        self._known(table)
        with self._connect(False) as db:
            db.execute(f'DROP TABLE "{table}"')
        return {"dropped": table}

    def _known(self, table: str) -> None:
        tables = self.tables()
        if table not in tables:
            raise ValueError(f"no table {table!r}; tables: {', '.join(tables)}")


def seed(path: Path) -> None:
    """A small shop: customers and orders, among them test orders left by a load test. Built in a temporary
    file and renamed into place, so an interrupted seed never leaves half a database."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".seeding")
    tmp.unlink(missing_ok=True)
    db = sqlite3.connect(tmp)
    try:
        db.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT, country TEXT)")
        db.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, customer TEXT, amount REAL, status TEXT)")
        names = ["ada", "alan", "grace", "edsger", "barbara", "donald", "frances", "ken"]
        db.executemany(
            "INSERT INTO customers VALUES (?, ?, ?)",
            [(i + 1, n, ["UK", "US", "NL", "FR"][i % 4]) for i, n in enumerate(names)],
        )
        rows = []
        for i in range(1, 91):
            test = i % 7 == 0
            customer = f"test-{i:03d}" if test else names[i % len(names)]
            status = ["paid", "shipped", "paid", "refunded"][i % 4] if not test else "paid"
            rows.append((i, customer, 0.0 if test else round(10 + (i * 37 % 190) + 0.99, 2), status))
        db.executemany("INSERT INTO orders VALUES (?, ?, ?, ?)", rows)
        db.commit()
    finally:
        db.close()
    os.replace(tmp, path)


def shop_tools(shop: Shop) -> BaseToolRegistry:
    @tool(description="List the tables and their row counts.", concurrent_safe=True)
    def list_tables() -> dict[str, int]:
        return shop.tables()

    @tool(
        description=f"Run a read-only SQL query (SELECT/WITH); at most {MAX_ROWS} rows come back.",
        concurrent_safe=True,
    )
    def query(sql: str) -> dict[str, Any]:
        return shop.query(sql)

    @tool(description="Delete the rows of `table` matching the SQL condition `where`. Needs human approval.")
    def delete_rows(table: str, where: str) -> dict[str, Any]:
        return shop.delete_rows(table, where)

    @tool(description="Drop a whole table. Needs human approval.")
    def drop_table(table: str) -> dict[str, Any]:
        return shop.drop_table(table)

    return tools_from([list_tables, query, delete_rows, drop_table])


TASK = {
    "goal": "The orders table holds test orders left by a load test (customers named test-...). Check "
    "the data, remove the test orders, verify, and report how many were removed."
}
SYSTEM = (
    "You are a careful data agent working on a live SQLite database. Look before you change anything; "
    "prefer aggregates to dumping tables. Deleting or dropping needs a human's approval: if refused, "
    "do not retry the same change. Call `done` with a short report when finished."
)


def _call(n: int, tool_name: str, **args: Any) -> str:
    return json.dumps({"tool": tool_name, "args": args, "id": f"call_{n:02d}"})


SCRIPT = [
    _call(1, "list_tables"),
    _call(2, "query", sql="SELECT * FROM orders"),
    _call(3, "query", sql="SELECT status, COUNT(*) AS n, SUM(amount) AS total FROM orders GROUP BY status"),
    _call(
        4, "query", sql="SELECT COUNT(*) AS n, SUM(amount) AS total FROM orders WHERE customer LIKE 'test-%'"
    ),
    _call(
        5,
        "query",
        sql="SELECT c.name, COUNT(o.id) AS orders FROM customers c JOIN orders o "
        "ON o.customer = c.name GROUP BY c.name ORDER BY orders DESC",
    ),
    _call(6, "delete_rows", table="orders", where="customer LIKE 'test-%'"),
    _call(7, "query", sql="SELECT COUNT(*) AS n FROM orders WHERE customer LIKE 'test-%'"),
    _call(8, "done", answer="(written from the transcript by ScriptedDataModel)"),
]


def _tool_outputs(messages: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """``(tool name, result text)`` of each tool result in the transcript, oldest first."""
    names: dict[str, str] = {}
    out: list[tuple[str, str]] = []
    for m in messages:
        for c in m.get("tool_calls") or ():
            names[str(c.get("id"))] = str((c.get("function") or {}).get("name"))
        if m.get("role") == "tool":
            out.append((names.get(str(m.get("tool_call_id")), "?"), str(m.get("content") or "")))
    return out


def report_from_transcript(messages: list[dict[str, Any]]) -> str:
    """The scripted model's final report, read from what the tools answered (as a real model would): the
    count of test orders left after the delete, and whether the delete was refused."""
    outputs = _tool_outputs(messages)
    left: int | None = None
    for name, text in reversed(outputs):
        if name == "query":
            try:
                left = int(json.loads(text)["rows"][0][0])
            except (ValueError, KeyError, IndexError, TypeError):
                left = None
            break
    refused = any(name == "delete_rows" and "Denied" in text for name, text in outputs)
    if left == 0:
        return "Removed the test orders (customers test-...); none remain."
    if left is None:
        return "I could not verify how many test orders remain; check the orders table."
    if refused:
        return f"Found the test orders, but the delete was refused: {left} (customers test-...) remain."
    return f"The test orders were not removed: {left} (customers test-...) remain."


class ScriptedDataModel(MockLLMBackend):
    """The scripted model of this example. Its last answer (``done``) is written from the transcript, so a
    refused delete is reported as refused: the script never claims what the tools did not do."""

    def generate(self, messages: list[dict[str, Any]], *, tools: Any = None, **options: Any) -> LLMResponse:
        return self._report(messages, super().generate(messages, tools=tools, **options))

    async def agenerate(
        self, messages: list[dict[str, Any]], *, tools: Any = None, **options: Any
    ) -> LLMResponse:
        return self._report(messages, await super().agenerate(messages, tools=tools, **options))

    @staticmethod
    def _report(messages: list[dict[str, Any]], response: LLMResponse) -> LLMResponse:
        for call in response.tool_calls:
            if call.tool == "done":
                call.args["answer"] = report_from_transcript(messages)
        return response


def _task_text(transcript: list[dict[str, Any]]) -> str | None:
    return next((str(m.get("content")) for m in transcript if m.get("role") == "user"), None)


class SameTaskCheckpointHook(CheckpointHook):
    """A :class:`CheckpointHook` that resumes only a run of the same task: a new task is a new run. The
    other task's checkpoint is kept beside it (``checkpoint-other-task-<time>.json``), never resumed."""

    def on_loop_start(self, state: Any, session_log: list[dict[str, Any]], context: Any) -> None:
        try:
            cp = Checkpoint.load(self.dir)
        except ValueError:
            cp = None  # unreadable: CheckpointHook reports it and stops the run without touching it
        if cp is not None and _task_text(cp.transcript) != _task_text(session_log):
            kept = self.dir / f"checkpoint-other-task-{time.strftime('%Y%m%d-%H%M%S')}.json"
            os.replace(self.dir / FILENAME, kept)
            print(
                f"note: {self.dir} held a checkpoint of another task (kept as {kept.name}); this task is a "
                "new run",
                file=sys.stderr,
            )
        super().on_loop_start(state, session_log, context)


class EventLines:
    """Prints compaction, approval and checkpoint-restore events as they happen."""

    def __init__(self, out: Any = None) -> None:
        self.out = out

    def on_event(self, name: str, attributes: dict[str, Any]) -> None:
        a = attributes
        if name == "compaction":
            line = (
                f"  ⟲ compacted ({a.get('strategy')}): {a.get('tokens_before'):,} → {a.get('tokens_after'):,} "
                f"tokens, {a.get('messages_before')} → {a.get('messages_after')} messages"
            )
        elif name == "approval":
            line = f"  ? approval {a.get('decision')}: {a.get('tool')} (call {a.get('call_id')})"
        elif name == "checkpoint.restore":
            line = f"  ↻ resumed from the checkpoint: {a.get('steps')} steps done, {a.get('replayed_calls')} to run"
        else:
            return
        print(line, file=self.out or sys.stdout, flush=True)


def scripted_offset(checkpoint_dir: Path) -> int:
    """How far into SCRIPT a resumed scripted run is: every call the model already proposed (steps, and
    calls in the transcript not run yet) used one scripted answer."""
    cp = Checkpoint.load(checkpoint_dir)
    if cp is None:
        return 0
    ids = {s["tool_call"]["id"] for s in cp.steps}
    for m in cp.transcript:
        ids.update(c.get("id") for c in m.get("tool_calls") or ())
    pending = getattr(cp, "pending", None)  # calls of an answer cut off between two of its calls
    if isinstance(pending, dict):
        ids.update(c.get("id") for c in pending.get("calls") or ())
    return len(ids)


def agent(
    scripted: bool = False,
    folder: str | None = None,
    *,
    compact_at: int | None = None,
    latency_s: float = 0.0,
    approvals: dict[str, bool] | None = None,
    ask: Any = None,
) -> dict[str, Any]:
    """The agent as a factory (``looplet run looplet.examples.data_agent:agent "task"``): the shop in
    ``folder``, approval, compaction, checkpoints.

    ``folder`` (or ``$LOOPLET_DATA_DIR``) is where the shop and the checkpoint live; a paused run there is
    resumed when the task is the same (a new task is a new run). Without either, every call makes a new
    folder in the temp dir (named on stderr), so a new ``looplet run`` never resumes an old run by
    accident: resuming takes ``LOOPLET_DATA_DIR=<that folder>``."""
    explicit = folder or os.environ.get("LOOPLET_DATA_DIR")
    if explicit:
        base = Path(explicit)
    else:
        base = Path(tempfile.mkdtemp(prefix="looplet-data-agent-"))
        print(f"data agent: a new run in {base} (resume it with LOOPLET_DATA_DIR={base})", file=sys.stderr)
    shop = Shop(base / "shop.db")
    checkpoints = base / "checkpoint"
    skip = scripted_offset(checkpoints) if scripted else 0
    llm = backend(
        scripted, SCRIPT[skip:] or SCRIPT[-1:], latency_s=latency_s, scripted_class=ScriptedDataModel
    )
    if scripted:  # the scripted model must not be asked to summarize: prune, then drop old turns
        strategy = compact_chain(Prune(keep_last=2), Truncate(keep_last=2))
    else:
        strategy = compact_chain(Prune(keep_last=2), Summarize(llm), Truncate(keep_last=2))
    hooks = [
        SameTaskCheckpointHook(checkpoints, approvals=approvals),  # first: it restores the run
        ApprovalHook(tools=DESTRUCTIVE, handler=ask),
        ThresholdCompactHook(max_tokens=compact_at or (1000 if scripted else None), strategy=strategy),
        EventLines(),
    ]
    config = LoopConfig(max_steps=25, system_prompt=SYSTEM, agent_name="data-agent", context_window=128_000)
    return {
        "llm": llm,
        "tools": shop_tools(shop),
        "hooks": hooks,
        "config": config,
        "folder": base,
        "checkpoints": checkpoints,
        "shop": shop,
    }


def _ask_terminal(tc: Any) -> bool | str:
    answer = input(f"\nallow {tc.tool}({json.dumps(tc.args)})? [y/N] ").strip().lower()
    return True if answer in ("y", "yes") else "refused on the terminal"


def main(argv: list[str] | None = None) -> int:
    p = parser("python -m looplet.examples.data_agent", __doc__)
    p.add_argument(
        "--dir", default=None, help="the run's folder: shop.db and checkpoint/ (default: a temp folder)"
    )
    p.add_argument("--resume", action="store_true", help="continue the run saved in --dir")
    p.add_argument(
        "--approve", action="store_true", help="with --resume: approve the call waiting for approval"
    )
    p.add_argument("--refuse", action="store_true", help="with --resume: refuse it (the model is told)")
    p.add_argument("--fresh", action="store_true", help="discard a saved run and the database, start again")
    p.add_argument("--ask", action="store_true", help="ask for approval on the terminal instead of pausing")
    p.add_argument(
        "--compact-at", type=int, default=None, help="compact the transcript above this many tokens"
    )
    p.add_argument("--trace", default=None, metavar="DIR", help="also save the trajectory under DIR")
    args = p.parse_args(argv)

    folder = Path(
        args.dir or os.environ.get("LOOPLET_DATA_DIR") or Path(tempfile.gettempdir()) / "looplet-data-agent"
    )
    try:
        approvals = _prepare(folder, args)
        a = agent(
            args.scripted,
            str(folder),
            compact_at=args.compact_at,
            latency_s=args.latency,
            approvals=approvals,
            ask=_ask_terminal if args.ask else None,
        )
        if args.trace:
            a["hooks"].append(trajectory_hook(args.trace)[0])
    except SetupError as exc:
        return fail(str(exc))
    print(f"folder: {folder}", file=sys.stderr)
    state = DefaultState(max_steps=args.max_steps or a["config"].max_steps)
    steps = composable_loop(
        llm=a["llm"], tools=a["tools"], task=TASK, hooks=a["hooks"], config=a["config"], state=state
    )
    try:
        result = run(steps, quiet=args.quiet, state=state)
    except KeyboardInterrupt:
        print(
            f"\ninterrupted: the run ended as 'cancelled' after {len(state.steps)} steps; the checkpoint is in "
            f"{a['checkpoints']}. Continue with: python -m looplet.examples.data_agent --resume --dir {folder}"
            + (" --scripted" if args.scripted else ""),
            file=sys.stderr,
        )
        return 130
    if result.stop_reason == "awaiting_approval":
        pending = state.metadata.get(PENDING_APPROVAL) or {}
        again = f"python -m looplet.examples.data_agent --resume --dir {folder}" + (
            " --scripted" if args.scripted else ""
        )
        print(
            f"\nwaiting for approval: {pending.get('tool')}({json.dumps(pending.get('args'))})\n"
            f"  approve: {again} --approve\n  refuse:  {again} --refuse"
        )
        return 3
    return exit_code(result)


def _prepare(folder: Path, args: Any) -> dict[str, bool] | None:
    """Check the flags against what is saved in ``folder``; returns the approvals to apply on resume."""
    checkpoints = folder / "checkpoint"
    try:
        cp = Checkpoint.load(checkpoints)
    except ValueError as exc:
        raise SetupError(
            f"the checkpoint in {checkpoints} cannot be read ({exc}); start again with --fresh"
        ) from None
    unfinished = cp is not None and cp.stop_reason != "done"
    if args.fresh or (not args.resume and not unfinished):
        if cp is not None or (folder / "shop.db").exists():
            shutil.rmtree(checkpoints, ignore_errors=True)
            (folder / "shop.db").unlink(missing_ok=True)
        if args.resume:
            raise SetupError("--resume and --fresh cannot go together")
        return None
    if not args.resume:
        assert cp is not None  # unfinished
        raise SetupError(
            f"an unfinished run is saved in {folder} (stopped: {cp.stop_reason}, {cp.step_count} steps); "
            "continue it with --resume, or start over with --fresh"
        )
    if cp is None:
        raise SetupError(f"nothing to resume in {folder}; run without --resume first")
    if cp.stop_reason == "done":
        raise SetupError(f"the run in {folder} already finished; start a new one with --fresh")
    return _decision(cp.metadata.get(PENDING_APPROVAL), args)


def _decision(pending: Any, args: Any) -> dict[str, bool] | None:
    """The approval to apply to the call waiting in the checkpoint, from --approve / --refuse / --ask."""
    if args.approve and args.refuse:
        raise SetupError("--approve and --refuse cannot go together")
    if not pending:
        if args.approve or args.refuse:
            raise SetupError("no call is waiting for approval; resume with --resume alone")
        return None
    if args.approve:
        return {pending["call_id"]: True}
    if args.refuse:
        return {pending["call_id"]: False}
    if args.ask and sys.stdin.isatty():
        return None  # the ApprovalHook's handler asks when the call comes round again
    raise SetupError(
        f"{pending['tool']}({json.dumps(pending.get('args'))}) is waiting for approval; "
        "resume with --approve or --refuse"
    )


if __name__ == "__main__":
    raise SystemExit(cli(main))
