"""The provenance writer process: same folders as writing in-process, and never a folder lost to it.

Spans come from the scripted demo agent traced by the real TracingHook into the real OpenTelemetry SDK;
the helper is the real subprocess. Faults are real too: the helper is killed with SIGKILL between
batches and in the middle of one, the interpreter it would start does not exist, the process that
started it is killed, and a forked child writes folders of its own.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from looplet import DefaultState, ProvenanceSink, TracingHook, composable_loop
from looplet.demo import TASK, build
from looplet.provenance import _writer
from looplet.provenance.format import folder_name, load_trajectory, render_files
from looplet.provenance.spans import records_from_spans

pytest.importorskip("opentelemetry.sdk.trace")
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

pytestmark = pytest.mark.skipif(os.name != "posix", reason="kills and forks processes")

ROOT = Path(__file__).resolve().parents[2]


def demo_spans(runs: int, capture: bool = True) -> list[Any]:
    provider = TracerProvider()
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    hook = TracingHook(tracer_provider=provider, capture_content=capture)
    for _ in range(runs):
        llm, tools, config = build(latency_s=0.0)
        for _step in composable_loop(
            llm=llm,
            tools=tools,
            task=TASK,
            config=config,
            hooks=[hook],
            state=DefaultState(max_steps=config.max_steps),
        ):
            pass
    return list(memory.get_finished_spans())


def folder_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(autouse=True)
def fresh_writer() -> Iterator[None]:
    """Each test starts with no helper and no memory of an earlier failure, and leaves none behind."""

    def reset() -> None:
        with _writer._LOCK:
            if _writer._helper is not None:
                _writer._helper.close()
            _writer._helper, _writer._failed_in, _writer._closed = None, None, False

    reset()
    yield
    reset()


def wait_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        try:  # our own child: reap it, or it lingers as a zombie
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return True
        except ChildProcessError:
            pass
        time.sleep(0.05)
    return False


def test_the_helper_writes_the_same_bytes_as_writing_in_process(tmp_path: Path) -> None:
    spans = demo_spans(6)
    inline = ProvenanceSink(tmp_path / "inline", writer="inline", redact=True)
    helped = ProvenanceSink(tmp_path / "helped", redact=True)
    for i in range(0, len(spans), 40):  # batches that end mid-run, as a BatchSpanProcessor's do
        inline.export(spans[i : i + 40])
        helped.export(spans[i : i + 40])
    assert _writer.writer_pid() not in (None, os.getpid())
    assert len(list((tmp_path / "helped").iterdir())) == 6
    assert folder_bytes(tmp_path / "helped") == folder_bytes(tmp_path / "inline")
    assert [p.name for p in helped.written] == [p.name for p in inline.written]


def test_a_helper_killed_between_batches_costs_nothing_but_speed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spans = demo_spans(4)
    per_run = len(spans) // 4
    sink = ProvenanceSink(tmp_path)
    assert len(sink.add_spans(spans[:per_run])) == 1
    pid = _writer.writer_pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    assert wait_gone(pid)
    with caplog.at_level(logging.WARNING, logger="looplet.provenance"):
        assert len(sink.add_spans(spans[per_run:])) == 3
    assert len(list(tmp_path.iterdir())) == 4
    for folder in tmp_path.iterdir():
        assert load_trajectory(folder).data["stop_reason"] == "done"
    assert "written in-process" in caplog.text
    assert _writer.writer_pid() is None  # not restarted for every batch


def test_a_helper_killed_mid_batch_loses_no_folder(tmp_path: Path) -> None:
    records = records_from_spans(demo_spans(8))
    results: dict[str, Any] = {}

    def done(job: _writer.Job, result: Any) -> None:
        results[job[1]] = result

    for n, rec in enumerate(records):
        if n == 3:  # three folders sent and not yet answered: the helper dies with them
            pid = _writer.writer_pid()
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            assert wait_gone(pid)
            # what a helper killed while writing leaves: a temporary folder, half full
            half = tmp_path / f".{folder_name(records[1])}.tmp{pid}-12345"
            half.mkdir()
            (half / "trajectory.json").write_text('{"schema_ver')
        _writer.submit((str(tmp_path), folder_name(rec), render_files(rec), False), done)
    _writer.drain()
    assert sorted(results) == sorted(folder_name(r) for r in records)
    for path in results.values():
        assert isinstance(path, Path), path
        assert load_trajectory(path).data["step_count"] == len(records[0].steps)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary folders left behind"


def test_where_the_helper_cannot_start_folders_are_written_in_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-such-python"))
    spans = demo_spans(2)
    with caplog.at_level(logging.WARNING, logger="looplet.provenance"):
        written = ProvenanceSink(tmp_path / "traces").add_spans(spans)
        ProvenanceSink(tmp_path / "more").add_spans(spans)
    assert len(written) == 2 and all(p.is_dir() for p in written)
    assert caplog.text.count("could not start") == 1, "tried again for every batch"
    assert _writer.writer_pid() is None


@pytest.mark.parametrize("frozen", [False, True])
def test_an_interpreter_that_is_not_python_is_never_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, frozen: bool
) -> None:
    """Under uWSGI or in a frozen application sys.executable is not a Python to run the helper with."""
    monkeypatch.setattr(sys, "executable", "/usr/bin/uwsgi" if not frozen else sys.executable)
    if frozen:
        monkeypatch.setattr(sys, "frozen", True, raising=False)

    def no_spawn(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"started {args[0]!r}")

    monkeypatch.setattr(subprocess, "Popen", no_spawn)
    with caplog.at_level(logging.WARNING, logger="looplet.provenance"):
        written = ProvenanceSink(tmp_path).add_spans(demo_spans(1))
    assert len(written) == 1 and written[0].is_dir()
    assert ("frozen application" if frozen else "does not look like a Python interpreter") in caplog.text


def test_a_write_the_helper_cannot_do_is_logged_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the folder should go")
    sink = ProvenanceSink(blocker)
    with caplog.at_level(logging.ERROR, logger="looplet.provenance"):
        assert sink.add_spans(demo_spans(1)) == []
    assert _writer.writer_pid() is not None, "the helper reported the failure and lives on"
    assert "could not write the trajectory" in caplog.text and str(blocker) in caplog.text


def test_the_helper_ignores_ctrl_c(tmp_path: Path) -> None:
    sink = ProvenanceSink(tmp_path)
    spans = demo_spans(2)
    half = len(spans) // 2
    sink.add_spans(spans[:half])
    pid = _writer.writer_pid()
    assert pid is not None
    os.kill(pid, signal.SIGINT)
    time.sleep(0.2)
    sink.add_spans(spans[half:])
    assert _writer.writer_pid() == pid
    assert len(list(tmp_path.iterdir())) == 2


def test_the_helper_exits_when_the_process_that_started_it_is_killed(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from tests.integration.test_provenance_writer import demo_spans
        from looplet import ProvenanceSink
        from looplet.provenance import _writer
        ProvenanceSink({str(tmp_path)!r}).add_spans(demo_spans(1))
        print(_writer.writer_pid(), flush=True)
        time.sleep(60)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        helper = int(parent.stdout.readline())
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=10)
        assert wait_gone(helper), "the writer process outlived the process that started it"
    finally:
        parent.kill()
    assert len(list(tmp_path.iterdir())) == 1


def test_a_forked_child_starts_its_own_helper(tmp_path: Path) -> None:
    spans = demo_spans(2)
    half = len(spans) // 2
    ProvenanceSink(tmp_path / "parent").add_spans(spans[:half])
    parent_helper = _writer.writer_pid()
    assert parent_helper is not None
    pid = os.fork()
    if pid == 0:  # the child: its own helper, its own folder
        code = 1
        try:
            written = ProvenanceSink(tmp_path / "child").add_spans(spans[half:])
            mine = _writer.writer_pid()
            code = 0 if len(written) == 1 and mine not in (None, parent_helper) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    assert len(list((tmp_path / "child").iterdir())) == 1
    # the parent's helper is untouched by the child's closing its copies of the pipes
    assert len(ProvenanceSink(tmp_path / "parent").add_spans(spans[half:])) == 1
    assert _writer.writer_pid() == parent_helper


def test_writer_arguments_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="writer must be"):
        ProvenanceSink(tmp_path, writer="thread")
    with pytest.raises(ValueError, match="max_queued_runs must be"):
        ProvenanceSink(tmp_path, max_queued_runs=0)


# -- trajectory_hook(background=True) ------------------------------------------------------------------------


def run_demo(hooks: list[Any]) -> DefaultState:
    llm, tools, config = build(latency_s=0.0)
    state = DefaultState(max_steps=config.max_steps)
    for _step in composable_loop(llm=llm, tools=tools, task=TASK, config=config, hooks=hooks, state=state):
        pass
    return state


def test_a_background_hook_writes_what_the_inline_hook_writes(tmp_path: Path) -> None:
    inline, background = ProvenanceSink(tmp_path / "inline"), ProvenanceSink(tmp_path / "background")
    state = run_demo([background.trajectory_hook(background=True), inline.trajectory_hook()])
    planned = Path(state.metadata["trajectory_dir"])  # on_loop_end runs in reverse: the first hook's path
    assert planned.parent == tmp_path / "background"
    background.flush()
    assert background.last_path == planned and planned.is_dir()
    a, b = folder_bytes(inline.last_path), folder_bytes(planned)
    assert set(a) == set(b)
    for name in a:  # what the model saw and said, step by step; timings come from each hook's own clock
        if name.startswith("call_"):
            assert a[name] == b[name], name
    assert load_trajectory(planned).data["stop_reason"] == "done"


def test_a_stalled_disk_never_holds_up_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import threading

    sink = ProvenanceSink(tmp_path, max_queued_runs=2)
    disk = threading.Event()
    real = sink._write_runs

    def stalled(records: Any) -> list[Path]:
        disk.wait()
        return real(records)

    monkeypatch.setattr(sink, "_write_runs", stalled)
    hook = sink.trajectory_hook(background=True)
    states: list[DefaultState] = []
    agent = threading.Thread(target=lambda: [states.append(run_demo([hook])) for _ in range(4)], daemon=True)
    with caplog.at_level(logging.WARNING, logger="looplet.provenance"):
        agent.start()
        agent.join(timeout=60)
        assert not agent.is_alive(), "the runs waited for the stalled writer"
    assert len(states) == 4 and sink.dropped_runs == 2  # two queued (one in hand), two dropped and counted
    assert "trajectory writer is behind" in caplog.text
    assert [s.metadata.get("trajectory_dir") is not None for s in states] == [True, True, False, False]
    disk.set()
    sink.flush()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        Path(s.metadata["trajectory_dir"]).name for s in states[:2]
    )


def test_queued_folders_are_written_at_exit(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        from tests.integration.test_provenance_writer import run_demo
        from looplet import ProvenanceSink
        state = run_demo([ProvenanceSink({str(tmp_path)!r}).trajectory_hook(background=True)])
        print(state.metadata["trajectory_dir"], flush=True)
    """)
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    folder = Path(out.stdout.strip())
    assert load_trajectory(folder).data["stop_reason"] == "done"


def test_a_relative_folder_follows_the_working_directory_of_the_exporter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spans = demo_spans(2)
    half = len(spans) // 2
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    sink = ProvenanceSink("traces")
    monkeypatch.chdir(tmp_path / "one")
    [first] = sink.add_spans(spans[:half])  # the helper starts here, in one/
    monkeypatch.chdir(tmp_path / "two")
    [second] = sink.add_spans(spans[half:])
    assert first.parent == second.parent == Path("traces")  # as the sink names them
    assert (tmp_path / "one" / first).is_dir() and (tmp_path / "two" / second).is_dir()
    assert not (tmp_path / "one" / second).exists()


def test_a_background_hook_in_a_forked_child_writes_its_own_runs(tmp_path: Path) -> None:
    sink = ProvenanceSink(tmp_path)
    hook = sink.trajectory_hook(background=True)
    run_demo([hook])
    sink.flush()
    pid = os.fork()
    if pid == 0:  # the parent's writer thread does not exist here: the child must start its own
        code = 1
        try:
            state = run_demo([hook])
            sink.flush(timeout_s=30)
            code = 0 if Path(state.metadata["trajectory_dir"]).is_dir() else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    assert len(list(tmp_path.iterdir())) == 2


# -- fsync=True: one file-system sync for the folders waiting together -------------------------------------


def test_synced_folders_are_the_same_bytes_with_one_sync_per_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from looplet.provenance import format as fmt

    records = records_from_spans(demo_spans(3))
    jobs = [
        (str(tmp_path / ("a" if n < 2 else "b")), folder_name(r), render_files(r))
        for n, r in enumerate(records)
    ]
    for root, name, files in jobs:
        fmt.write_folder(str(tmp_path / "reference"), name, files, fsync=True)
    synced: list[str] = []
    real_sync = fmt._syncfs()
    assert real_sync is not None, "this Linux's C library has syncfs"

    def counting(path: str) -> None:
        synced.append(path)
        real_sync(path)

    flushed: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(fmt, "_SYNCFS", counting)
    monkeypatch.setattr(os, "fsync", lambda fd: (flushed.append(fd), real_fsync(fd))[1])
    results = fmt.write_folders_synced(jobs)
    assert [type(r) for r in results] == [type(tmp_path)] * 3, results
    assert sorted(synced) == [str(tmp_path / "a"), str(tmp_path / "b")]  # one sync per root, not per file
    assert len(flushed) == 2  # and one flush of each root after the renames
    for (root, name, _files), path in zip(jobs, results):
        assert folder_bytes(path) == folder_bytes(tmp_path / "reference" / name)
    assert not [p for p in (tmp_path / "a").iterdir() if p.name.startswith(".")]


def test_a_failed_sync_leaves_no_folder_in_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from looplet.provenance import format as fmt

    [record] = records_from_spans(demo_spans(1))

    def broken(path: str) -> None:
        raise OSError(5, "Input/output error", path)

    monkeypatch.setattr(fmt, "_SYNCFS", broken)
    [result] = fmt.write_folders_synced([(str(tmp_path), folder_name(record), render_files(record))])
    assert isinstance(result, OSError) and result.errno == 5
    assert list(tmp_path.iterdir()) == []  # neither the folder nor its temporary copy


def test_fsync_through_the_helper_writes_what_fsync_in_process_writes(tmp_path: Path) -> None:
    spans = demo_spans(5)
    inline = ProvenanceSink(tmp_path / "inline", writer="inline", fsync=True)
    helped = ProvenanceSink(tmp_path / "helped", fsync=True)
    inline.add_spans(spans)
    assert len(helped.add_spans(spans)) == 5
    assert folder_bytes(tmp_path / "helped") == folder_bytes(tmp_path / "inline")


def test_json_left_for_the_writer_formats_to_the_same_text(tmp_path: Path) -> None:
    from looplet.provenance.format import file_text
    from looplet.telemetry.redact import Redactor

    for record in records_from_spans(demo_spans(2)):
        now = render_files(record, Redactor())
        later = render_files(record, Redactor(), defer_json=True)
        assert set(now) == set(later)
        assert any(not isinstance(v, str) for v in later.values())
        assert {path: file_text(v) for path, v in later.items()} == now
