"""Every code block in README.md and docs/*.md runs as written.

One test case per Markdown file. The file's blocks run in document order, in one fresh subprocess whose
working directory is an empty temporary folder:

* Each ```` ```python ```` block runs ALONE, as if pasted into a fresh interpreter: in a child process
  forked from the runner before any block ran, with an empty namespace, so a block that relies on an
  import or a name of an earlier block fails (every block carries its own imports). The code is compiled
  with the Markdown file as its file name and padded so that tracebacks point at the real line of the
  ``.md`` file. Files and folders a block writes stay for the next blocks (as on a reader's disk).
* A python block preceded by ``<!-- file: NAME -->`` is only written to ``NAME`` in the working folder
  (a server script, a module another block imports). A python block whose first line is a comment naming a
  file (``# evals.py``, ``# my_agent.py: ...``) is written to that file *and* executed.
* Shell blocks (```` ```bash ````, ``sh``, ``shell``, ``console``): each line that is a looplet command
  (``python -m looplet ...``, ``python -m looplet.examples...``, ``looplet ...``, optionally after
  ``VAR=value`` assignments) runs with ``bash -c`` in the working folder, with the project's venv first on
  ``PATH`` and a timeout. ``/tmp/`` in a command, and ``TMPDIR``, point into the working folder, so runs
  share no state. A command fails if it times out, prints a Python traceback, or exits with a status other than
  0, 1 (a run that stopped without ``done``, a failed eval) or 3 (a run paused for approval). Every other
  shell line (installs, ``docker compose``, ``promtool``) is listed as not run; nothing is installed.
* ``<!-- not-run: reason -->`` right before a block skips it; such blocks are counted and must stay rare.
  Other fences (``text``, ``yaml``, untagged) are output or configuration and are not code.

The provider is tests/fakeserver.py on 127.0.0.1 (fixture ``fake_llm_server``), scripted with enough
``done`` tool calls for any example to finish. ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY`` / ``OPENAI_MODEL``
and the ``ANTHROPIC_*`` equivalents point at it. Before the first block the subprocess runs this prelude
(``_prelude`` below):

1. an import hook patches ``openai.OpenAI``, ``openai.AsyncOpenAI``, ``anthropic.Anthropic`` and
   ``anthropic.AsyncAnthropic`` so that a client built with any other ``base_url`` (``http://localhost:11434/v1``
   for Ollama, a vLLM host, the real APIs) talks to the fake server instead;
2. Python-level sockets may only connect to loopback addresses: anything else fails with ``OSError``
   (OTLP exporters pointed at a remote collector then count dropped spans, as they would with a dead
   collector).

See what ran and what did not with ``pytest -rP tests/e2e/test_docs.py``. The subprocess is also the
runner: ``python tests/e2e/test_docs.py --run PLAN.json``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_LANGS = {"bash", "sh", "shell", "console"}
NOT_RUN_BUDGET = 6  # <!-- not-run --> markers allowed over all docs: keep them rare
FILE_TIMEOUT_S = 240
COMMAND_TIMEOUT_S = 90
OK_EXIT = (0, 1, 3)

_FENCE = re.compile(r"^```([\w+-]*)\s*$")
_MARKER = re.compile(r"^<!--\s*(not-run|file)\s*:\s*(.*?)\s*-->\s*$")
_FILE_COMMENT = re.compile(r"^#\s*([\w./-]+\.py)\b")
_ASSIGN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=\S*$")


# -- parsing ----------------------------------------------------------------------------------------------


def parse(path: Path) -> list[dict[str, Any]]:
    """The fenced blocks of a Markdown file: ``{lang, line (of the first code line), code, marker, arg}``."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[dict[str, Any]] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        start = i
        j = i + 1
        while j < len(lines) and not lines[j].startswith("```"):
            j += 1
        marker = arg = None
        k = start - 1
        while k >= 0 and not lines[k].strip():
            k -= 1
        if k >= 0 and (mm := _MARKER.match(lines[k].strip())):
            marker, arg = mm.group(1), mm.group(2)
        blocks.append(
            {
                "lang": m.group(1).lower(),
                "line": start + 2,
                "code": "\n".join(lines[start + 1 : j]) + "\n",
                "marker": marker,
                "arg": arg,
            }
        )
        i = j + 1
    return blocks


def is_looplet_command(line: str) -> bool:
    words = line.split()
    while words and _ASSIGN.match(words[0]):
        words = words[1:]
    if not words:
        return False
    if words[0] == "looplet":
        return True
    return (
        len(words) >= 3
        and Path(words[0]).name in ("python", "python3")
        and words[1] == "-m"
        and (words[2] == "looplet" or words[2].startswith("looplet."))
    )


def shell_lines(code: str) -> list[str]:
    """Logical lines of a shell block: continuations joined, comments and ``$ `` prompts dropped."""
    out: list[str] = []
    buf = ""
    for raw in code.splitlines():
        line = raw.strip()
        if line.startswith("$ "):
            line = line[2:]
        if line.endswith("\\"):
            buf += line[:-1].rstrip() + " "
            continue
        line = (buf + line).strip()
        buf = ""
        if line and not line.startswith("#"):
            out.append(line)
    return out


def plan(path: Path) -> dict[str, Any]:
    """What to do with each block of ``path``: the items the runner executes and what is not run."""
    rel = str(path.relative_to(ROOT))
    items: list[dict[str, Any]] = []
    not_run: list[str] = []
    markers: list[str] = []
    for b in parse(path):
        where = f"{rel}:{b['line']}"
        if b["marker"] == "not-run":
            markers.append(f"{where} ({b['lang'] or 'untagged'}): {b['arg']}")
            continue
        if b["lang"] == "python":
            if b["marker"] == "file":
                items.append({"kind": "file", "name": b["arg"], "code": b["code"], "where": where})
                continue
            first = b["code"].lstrip().splitlines()[0] if b["code"].strip() else ""
            fm = _FILE_COMMENT.match(first)
            if fm:
                items.append({"kind": "file", "name": fm.group(1), "code": b["code"], "where": where})
            items.append({"kind": "python", "code": b["code"], "line": b["line"], "where": where})
        elif b["lang"] in SHELL_LANGS:
            for line in shell_lines(b["code"]):
                if is_looplet_command(line):
                    items.append({"kind": "command", "command": line, "where": where})
                else:
                    not_run.append(f"{where}: {line}")
    return {"file": rel, "items": items, "not_run": not_run, "markers": markers}


# -- the runner (in the subprocess) ---------------------------------------------------------------------------


def _prelude(fake_url: str) -> None:
    """Redirect provider clients to the fake server; allow only loopback connections."""
    import importlib.abc
    import importlib.util
    import ipaddress
    import socket

    targets = {
        "openai": (("OpenAI", "AsyncOpenAI"), fake_url + "/v1"),
        "anthropic": (("Anthropic", "AsyncAnthropic"), fake_url),
    }

    def patch(module: Any) -> None:
        names, url = targets[module.__name__]
        for name in names:
            cls = getattr(module, name)
            init = cls.__init__

            def __init__(self: Any, *args: Any, __init: Any = init, __url: str = url, **kwargs: Any) -> None:
                kwargs["base_url"] = __url
                __init(self, *args, **kwargs)

            cls.__init__ = __init__

    class Redirect(importlib.abc.MetaPathFinder):
        busy = False

        def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
            if name not in targets or self.busy:
                return None
            self.busy = True
            try:
                spec = importlib.util.find_spec(name)
            finally:
                self.busy = False
            if spec is None or spec.loader is None:
                return spec
            exec_module = spec.loader.exec_module

            def exec_and_patch(module: Any) -> None:
                exec_module(module)
                patch(module)

            spec.loader.exec_module = exec_and_patch  # type: ignore[method-assign]
            return spec

    sys.meta_path.insert(0, Redirect())

    def loopback(host: Any) -> bool:
        if host in ("localhost", "", None):
            return True
        try:
            ip = ipaddress.ip_address(str(host).split("%")[0])
        except ValueError:
            return False
        return ip.is_loopback or ip.is_unspecified  # 0.0.0.0 / :: to listen on, or connect to this host

    connect, connect_ex, getaddrinfo = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo

    def check(sock: Any, address: Any) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not loopback(address[0]):
            raise OSError(f"docs test: connections outside 127.0.0.1 are blocked ({address[0]})")

    def guarded_connect(self: Any, address: Any) -> Any:
        check(self, address)
        return connect(self, address)

    def guarded_connect_ex(self: Any, address: Any) -> Any:
        check(self, address)
        return connect_ex(self, address)

    def guarded_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if not loopback(host.decode() if isinstance(host, bytes) else host):
            raise socket.gaierror(socket.EAI_NONAME, f"docs test: name lookups are blocked ({host})")
        return getaddrinfo(host, *args, **kwargs)

    socket.socket.connect = guarded_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = guarded_connect_ex  # type: ignore[method-assign]
    socket.getaddrinfo = guarded_getaddrinfo


def _run_plan(plan_path: str) -> int:
    spec = json.loads(Path(plan_path).read_text())
    _prelude(os.environ["LOOPLET_DOCS_FAKE_URL"])
    import looplet  # noqa: F401  (imported once before forking: each block's child starts faster)

    cwd = Path.cwd()
    report: list[dict[str, Any]] = []
    status = 0
    for item in spec["items"]:
        started = time.perf_counter()
        entry: dict[str, Any] = {"where": item["where"], "kind": item["kind"]}
        try:
            if item["kind"] == "file":
                target = cwd / item["name"]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(item["code"])
                entry["name"] = item["name"]
            elif item["kind"] == "python":
                print(f"--- {item['where']} (python, alone)", flush=True)
                entry.update(_run_alone(item, str(ROOT / spec["file"])))
                if not entry["ok"]:
                    status = 1
            else:
                entry.update(_run_command(item["command"], cwd))
                if not entry["ok"]:
                    status = 1
        except BaseException as exc:
            import traceback

            entry["ok"] = False
            entry["error"] = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            status = 1
        else:
            entry.setdefault("ok", True)
        entry["seconds"] = round(time.perf_counter() - started, 2)
        report.append(entry)
        Path(plan_path + ".report").write_text(json.dumps(report))  # every item runs: all failures show
    sys.stdout.flush()
    os._exit(status)  # do not wait for threads a doc left running (servers, exporters); flushed above


def _run_alone(item: dict[str, Any], filename: str) -> dict[str, Any]:
    """Run one python block in a forked child with a fresh namespace; its traceback comes back in a file."""
    import tempfile
    import traceback

    fd, err_path = tempfile.mkstemp(prefix="docs-block-", suffix=".err")
    os.close(fd)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: a fresh namespace, as a block pasted alone into a new interpreter
        sys.path.insert(0, "")  # as in an interactive session: modules in the working folder import
        code = 1
        try:
            exec(
                compile("\n" * (item["line"] - 1) + item["code"], filename, "exec"), {"__name__": "__main__"}
            )
            code = 0
        except BaseException as exc:
            Path(err_path).write_text("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    deadline = time.monotonic() + COMMAND_TIMEOUT_S
    while True:
        done, wait_status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            return {"ok": False, "error": f"the block did not finish within {COMMAND_TIMEOUT_S} s"}
        time.sleep(0.02)  # polling the child's exit; the deadline above is the bound
    error = Path(err_path).read_text()
    os.unlink(err_path)
    code = os.waitstatus_to_exitcode(wait_status)
    if code == 0:
        return {"ok": True}
    return {"ok": False, "error": error or f"the block's process ended with status {code}"}


def _run_command(command: str, cwd: Path) -> dict[str, Any]:
    local = command.replace("/tmp/", f"{cwd}/tmp/")
    env = dict(os.environ)
    env["PATH"] = f"{Path(PY).parent}{os.pathsep}{env.get('PATH', '')}"
    env["LOOPLET_PROGRESS"] = "off"
    print(f"--- $ {command}", flush=True)
    try:
        proc = subprocess.run(
            ["bash", "-c", local], cwd=cwd, env=env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S
        )
    except subprocess.TimeoutExpired as exc:
        return {
            "ok": False,
            "command": command,
            "error": f"timed out after {COMMAND_TIMEOUT_S} s\n{exc.stdout or ''}",
        }
    out = proc.stdout + proc.stderr
    sys.stdout.write(out[-2000:])
    ok = proc.returncode in OK_EXIT and "Traceback (most recent call last)" not in out
    return {
        "ok": ok,
        "command": command,
        "exit": proc.returncode,
        **({} if ok else {"error": f"exit status {proc.returncode}\n{out[-4000:]}"}),
    }


# -- the tests ----------------------------------------------------------------------------------------------

if __name__ != "__main__":
    import pytest

    from tests.fakeserver import FakeLLMServer, tool_call, usage

    @pytest.mark.parametrize("doc", DOCS, ids=[str(p.relative_to(ROOT)) for p in DOCS])
    def test_doc_blocks_run(doc: Path, tmp_path: Path, fake_llm_server: FakeLLMServer) -> None:
        p = plan(doc)
        runnable = [i for i in p["items"] if i["kind"] != "file"]
        print(
            f"{p['file']}: {sum(i['kind'] == 'python' for i in runnable)} python blocks, "
            f"{sum(i['kind'] == 'command' for i in runnable)} commands, "
            f"{sum(i['kind'] == 'file' for i in p['items'])} files written"
        )
        for line in p["not_run"]:
            print(f"  not run (shell, not a looplet command): {line}")
        for line in p["markers"]:
            print(f"  not run (marked): {line}")
        if not runnable:
            return
        fake_llm_server.script(
            *[tool_call("done", {"answer": "ok"}, usage=usage(120, 12)) for _ in range(60)]
        )
        work = tmp_path / "work"
        (work / "tmp").mkdir(parents=True)
        plan_file = tmp_path / "plan.json"
        plan_file.write_text(json.dumps(p))
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("OTEL_", "OPENAI_", "ANTHROPIC_")) and k not in ("TRACEPARENT", "TRACESTATE")
        }
        env.update(
            OPENAI_BASE_URL=fake_llm_server.openai_url,
            OPENAI_API_KEY="sk-docs-test",
            OPENAI_MODEL="gpt-4o-mini",
            ANTHROPIC_BASE_URL=fake_llm_server.anthropic_url,
            ANTHROPIC_API_KEY="sk-ant-docs-test",
            ANTHROPIC_MODEL="claude-sonnet-4-5",
            LOOPLET_DOCS_FAKE_URL=fake_llm_server.url,
            TMPDIR=str(work / "tmp"),
            PYTHONPATH=str(ROOT),
            PYTHONUNBUFFERED="1",
        )
        try:
            proc = subprocess.run(
                [PY, str(Path(__file__)), "--run", str(plan_file)],
                cwd=work,
                env=env,
                capture_output=True,
                text=True,
                timeout=FILE_TIMEOUT_S,
            )
            output, code = proc.stdout + proc.stderr, proc.returncode
        except subprocess.TimeoutExpired as exc:
            output, code = f"(timed out after {FILE_TIMEOUT_S} s)\n{exc.stdout or ''}{exc.stderr or ''}", -1
        report_file = Path(str(plan_file) + ".report")
        report = json.loads(report_file.read_text()) if report_file.exists() else []
        for entry in report:
            print(
                f"  {'ok  ' if entry['ok'] else 'FAIL'} {entry['where']} {entry['kind']}"
                f"{' $ ' + entry['command'] if 'command' in entry else ''}"
                f"{' -> exit ' + str(entry['exit']) if 'exit' in entry else ''} ({entry['seconds']} s)"
            )
        failed = [e for e in report if not e["ok"]]
        if failed:
            text = []
            for e in failed:
                what = f"command `{e['command']}`" if "command" in e else f"{e['kind']} block"
                text.append(f"{e['where']}: {what} failed:\n{e['error'][-1500:]}")
            pytest.fail(
                f"{len(failed)} of {len(report)} items failed\n"
                + "\n".join(text)
                + f"\n--- output ---\n{output[-2000:]}",
                pytrace=False,
            )
        assert code == 0 and len(report) == len(p["items"]), (
            f"{p['file']}: the runner stopped after {len(report)} of {len(p['items'])} items "
            f"(exit {code}):\n{output[-3000:]}"
        )

    def test_not_run_markers_are_rare() -> None:
        marked = [m for doc in DOCS for m in plan(doc)["markers"]]
        print(f"{len(marked)} blocks marked not-run:", *marked, sep="\n  ")
        assert len(marked) <= NOT_RUN_BUDGET, marked

    # Pages linked from the docs that other people are still writing; remove a name once its page exists.
    PENDING_PAGES = {"reliability.md"}

    def _anchors(path: Path) -> set[str]:
        """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
        out = set()
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.startswith("#"):
                title = line.lstrip("#").strip().lower()
                out.add(re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", title)))
        return out

    def test_links_between_docs_resolve() -> None:
        """Relative links in README.md and docs/*.md name files (and headings) that exist."""
        broken = []
        for doc in DOCS:
            text = re.sub(r"```.*?```", "", doc.read_text(encoding="utf-8"), flags=re.S)
            for target in re.findall(r"\]\(([^)\s]+)\)", text):
                if re.match(r"[a-z]+:", target) or target.startswith("#") and not target[1:]:
                    continue
                name, _, anchor = target.partition("#")
                path = (doc.parent / name) if name else doc
                if not path.exists():
                    if path.name not in PENDING_PAGES:
                        broken.append(f"{doc.relative_to(ROOT)}: {target} (no such file)")
                elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
                    broken.append(f"{doc.relative_to(ROOT)}: {target} (no such heading)")
        assert not broken, "\n".join(broken)

    def test_parser_finds_blocks_markers_and_commands(tmp_path: Path) -> None:
        doc = tmp_path / "x.md"
        doc.write_text(
            "# t\n\n```python\nx = 1\n```\n\n<!-- not-run: a fragment -->\n```python\nboom(\n```\n"
            "<!-- file: srv.py -->\n```python\nprint('srv')\n```\n"
            "```bash\n$ python -m looplet show traces \\\n  --html x.html\npip install looplet\n"
            "X=1 looplet doctor\n```\n```text\npython -m looplet demo\n```\n"
        )
        blocks = parse(doc)
        assert [(b["lang"], b["line"], b["marker"]) for b in blocks] == [
            ("python", 4, None),
            ("python", 9, "not-run"),
            ("python", 13, "file"),
            ("bash", 16, None),
            ("text", 22, None),
        ]
        assert shell_lines(blocks[3]["code"]) == [
            "python -m looplet show traces --html x.html",
            "pip install looplet",
            "X=1 looplet doctor",
        ]
        assert [is_looplet_command(x) for x in shell_lines(blocks[3]["code"])] == [True, False, True]
        assert not is_looplet_command("python -m loopletx") and is_looplet_command(
            ".venv/bin/python -m looplet demo"
        )


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--run":
    sys.path.insert(0, str(ROOT))
    _run_plan(sys.argv[2])
