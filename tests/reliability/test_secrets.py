"""Secrets: planted secrets appear in 0 bytes of anything a run writes.

The secrets go into every place a user's data can enter a run: the task, the system prompt, the model's
tool arguments and answers, a tool's result, a tool's exception, a hook's exception (which also reaches the
stdlib ``looplet`` logger), an HTTP error body (long, so a cut at 300 characters falls inside the key), the
model name the server answers with, a tool name the model made up with a key glued to a word
(``mail_sk-proj-...``), and the API key the backend sends. Some match no pattern and are known only as
values: the API key ``sk-SECRET-<digits>``, ``MY_SERVICE_TOKEN`` and a bare 40-character AWS secret key in
the environment. The run has every sink on, with content capture off (the default) and on (the riskiest
setting). Then every byte the run wrote is scanned: the OTLP requests the real HTTP exporter sent to an
in-test receiver, the JSON log file (LoggingHook lines and stdlib ``looplet`` lines), ``/metrics``, every
file under the trace folders (the hook path and the span-exporter path of ``ProvenanceSink``) and whatever
reached stdout/stderr. The scan looks for every 10-character window of each secret's random part, so a
secret clipped or half-redacted also counts as a leak.
"""

from __future__ import annotations

import random
import string
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from looplet import LoopConfig, tool, tools_from
from looplet.backends.openai import OpenAIBackend
from looplet.provenance import ProvenanceSink
from looplet.telemetry.setup import configure
from tests.fakeserver import error, text, tool_call, tool_calls
from tests.integration._otlp_receiver import HttpReceiver, reset_global_telemetry
from tests.unit._harness import MODES, run

_rnd = random.Random()  # a fresh secret every run: nothing can be special-cased
_body = lambda n: "".join(_rnd.choice(string.ascii_letters + string.digits) for _ in range(n))  # noqa: E731
OPENAI_KEY = "sk-proj-" + _body(40)
ANTHROPIC_KEY = "sk-ant-api03-" + _body(40)
EMAIL_USER, EMAIL_DOMAIN = "jane.doe." + _body(10).lower(), _body(8).lower() + "-corp.example.com"
EMAIL = f"{EMAIL_USER}@{EMAIL_DOMAIN}"
# known only by value: no pattern matches them
API_KEY = "sk-SECRET-" + "".join(_rnd.choice(string.digits) for _ in range(5))
SERVICE_TOKEN = _body(24)  # MY_SERVICE_TOKEN
AWS_SECRET = "".join(_rnd.choice(string.ascii_letters + string.digits + "/+") for _ in range(40))
GLUED_KEY = "sk-proj-" + _body(40)  # in a tool name: mail_sk-proj-...
SECRETS = {
    "openai_key": OPENAI_KEY,
    "anthropic_key": ANTHROPIC_KEY,
    "email": EMAIL,
    "api_key": API_KEY,
    "service_token": SERVICE_TOKEN,
    "aws_secret": AWS_SECRET,
    "glued_key": GLUED_KEY,
}


def needles() -> dict[str, list[bytes]]:
    """Per secret: the whole secret and every 10-character window of its distinctive part."""
    parts = {
        "openai_key": OPENAI_KEY[len("sk-proj-") :],
        "anthropic_key": ANTHROPIC_KEY[len("sk-ant-api03-") :],
        "email": EMAIL_USER + EMAIL_DOMAIN.split("-corp")[0],
        "api_key": API_KEY,
        "service_token": SERVICE_TOKEN,
        "aws_secret": AWS_SECRET,
        "glued_key": GLUED_KEY[len("sk-proj-") :],
    }
    out = {}
    for name, part in parts.items():
        windows = {part[i : i + 10] for i in range(len(part) - 9)}
        out[name] = [SECRETS[name].encode()] + [w.encode() for w in sorted(windows)]
    return out


def leaks(where: str, data: bytes) -> list[str]:
    found = []
    for name, ns in needles().items():
        hits = [n for n in ns if n in data]
        if hits:
            at = data.find(hits[0])
            found.append(f"{name} in {where}: ...{data[max(0, at - 120) : at + 60]!r}...")
    return found


@tool(description="Look up a customer record.")
def lookup(customer: str) -> dict:
    return {
        "customer": customer,
        "email": EMAIL,
        "billing_key": ANTHROPIC_KEY,
        "note": f"write to {EMAIL}; service token {SERVICE_TOKEN}; aws {AWS_SECRET}",
    }


@tool(description="Charge the customer.")
def charge(token: str) -> str:
    raise PermissionError(f"the gateway refused token {token} (account key {OPENAI_KEY}, owner {EMAIL})")


class LeakyHook:
    """A hook that raises with a secret in its message: reported by the loop (stdlib logger, LoggingHook
    line, span event), and the run goes on."""

    def pre_dispatch(self, state: Any, session_log: Any, tool_call: Any, step_num: int) -> None:
        if step_num == 2:
            raise RuntimeError(f"policy service rejected {API_KEY} / {SERVICE_TOKEN} for {tool_call.tool}")


SYSTEM = (
    f"You are a support agent. Internal key: {ANTHROPIC_KEY}. Escalate to {EMAIL}. Call a tool each turn."
)
TASK = {"goal": f"Find the customer {EMAIL} and charge them; our key is {OPENAI_KEY}, token {SERVICE_TOKEN}"}
# an HTTP error body longer than the 300 characters a backend keeps: the key straddles the cut
LONG_ERROR = "rate limit reached for this organisation; " * 7 + f"key {OPENAI_KEY} of {EMAIL}"
MODEL = f"gpt-4o-mini-{SERVICE_TOKEN}"  # the model name the server answers with


def script(server: Any) -> None:
    """A 429 with a long body naming the key, a call, two calls in one answer (one of them raising), a
    made-up tool with a key glued to its name, a text answer, done."""
    server.script(
        error(429, LONG_ERROR, retry_after=0),
        tool_call("lookup", {"customer": EMAIL}, model=MODEL),
        tool_calls([("charge", {"token": ANTHROPIC_KEY}), ("lookup", {"customer": f"billing {OPENAI_KEY}"})]),
        tool_call(f"mail_{GLUED_KEY}", {"to": EMAIL, "aws": AWS_SECRET}, model=MODEL),
        text(
            f"I could not charge {EMAIL} with {ANTHROPIC_KEY}."
        ),  # no tool call: fed back, kept in the record
        tool_call("done", {"answer": f"Customer {EMAIL} found; key {OPENAI_KEY} refused; {API_KEY}."}),
    )


@pytest.fixture(autouse=True)
def secret_env(monkeypatch):
    """Secrets the process holds in its environment (read when the redactors are made)."""
    monkeypatch.setenv("MY_SERVICE_TOKEN", SERVICE_TOKEN)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)


@pytest.fixture
def receiver():
    reset_global_telemetry()
    r = HttpReceiver()
    yield r
    r.close()
    reset_global_telemetry()


def run_and_collect(
    mode: str,
    server: Any,
    receiver: Any,
    tmp_path: Path,
    capfd: Any,
    tools: list,
    capture: bool = True,
    hooks: tuple = (),
) -> Any:
    """One run with every telemetry output on; returns (steps, result, spans, written) where ``written``
    maps each place the run wrote to to its bytes."""
    traces, span_traces, log_file = (
        tmp_path / "traces",
        tmp_path / "traces-from-spans",
        tmp_path / "run.jsonl",
    )
    session = configure(
        service_name="secrets",
        otlp_endpoint=receiver.url,
        otlp_protocol="http/protobuf",
        metrics_port=0,
        json_logs=True,
        log_file=str(log_file),
        log_level="DEBUG",
        provenance_dir=str(traces),
        capture_content=capture,
        schedule_delay_s=0.05,
    )
    session.tracer_provider.add_span_processor(SimpleSpanProcessor(ProvenanceSink(span_traces, redact=True)))
    llm = OpenAIBackend(model="gpt-4o-mini", base_url=server.openai_url, api_key=API_KEY, timeout=5)
    try:
        steps, result = run(
            mode,
            llm=llm,
            task=TASK,
            tools=tools_from(tools),
            hooks=[*session.hooks, *hooks],
            config=LoopConfig(system_prompt=SYSTEM, llm_backoff_s=0.0),
        )
        assert server.requests[0].headers["authorization"] == f"Bearer {API_KEY}"  # the key was used
        session.force_flush(5)
        spans = receiver.wait_for(lambda s: any(x["name"].startswith("invoke_agent") for x in s))
        with urllib.request.urlopen(f"http://127.0.0.1:{session.metrics_port}/metrics", timeout=5) as r:
            metrics = r.read()
    finally:
        llm.close()
        session.shutdown(timeout_s=3)
    out, err = capfd.readouterr()
    written: dict[str, bytes] = {
        "OTLP export": b"".join(req.SerializeToString() for req in receiver.requests),
        "/metrics": metrics,
        "stdout": out.encode(),
        "stderr": err.encode(),
    }
    for path in sorted(tmp_path.rglob("*")):
        if path.is_file():
            written[str(path.relative_to(tmp_path))] = path.read_bytes()
    return steps, result, spans, written


def assert_no_leaks(written: dict[str, bytes]) -> None:
    found = [leak for where, data in written.items() for leak in leaks(where, data)]
    assert not found, f"secrets leaked ({len(found)} places):\n" + "\n".join(found)


@pytest.mark.parametrize("capture", [False, True], ids=["default", "capture-on"])
@pytest.mark.parametrize("mode", MODES)
def test_planted_secrets_appear_in_zero_bytes_of_spans_logs_metrics_and_trace_files(
    mode, capture, receiver, tmp_path, fake_llm_server, capfd
):
    script(fake_llm_server)
    steps, result, spans, written = run_and_collect(
        mode, fake_llm_server, receiver, tmp_path, capfd, [lookup, charge], capture, (LeakyHook(),)
    )
    assert result.stop_reason == "done" and len(steps) == 5
    assert steps[3].tool_result.error_kind == "unknown_tool"  # the glued tool name reached the sinks

    # the scan is not vacuous: what could leak was written, redacted in place
    attrs = " ".join(str(v) for s in spans for v in s["attributes"].values())
    names = " ".join(s["name"] for s in spans)
    events = " ".join(str(a) for s in spans for _, a in s["events"])
    if capture:
        for marker in ("[REDACTED:openai_key]", "[REDACTED:anthropic_key]", "[REDACTED:email]"):
            assert marker in attrs, f"{marker} not on any span: content capture did not capture"
        assert "[REDACTED:MY_SERVICE_TOKEN]" in attrs  # known by value only
    else:
        assert "gen_ai.input.messages" not in " ".join(k for s in spans for k in s["attributes"])
    assert "rate limit" in events and "[REDACTED:" in events  # the LLM error, redacted before it was cut
    assert "gpt-4o-mini-[REDACTED:MY_SERVICE_TOKEN]" in attrs  # the server's model name
    assert "mail_[REDACTED:openai_key]" in attrs + names  # the glued tool name
    assert b"looplet_llm_retries_total" in written["/metrics"]
    log = written["run.jsonl"]
    assert b"[REDACTED:" in log and b'"logger": "looplet"' in log  # stdlib lines are in the same file
    assert b"LeakyHook" in log and b"[REDACTED:secret]" not in log.replace(b"[REDACTED:api_key]", b"")
    files = [k for k in written if k.startswith(("traces/", "traces-from-spans/"))]
    assert any(k.startswith("traces/") for k in files) and any(
        k.startswith("traces-from-spans/") for k in files
    )
    assert sum(b"[REDACTED:" in written[k] for k in files) >= 4
    assert_no_leaks(written)
    print(
        f"\nsecrets [{mode}, capture={capture}]: {len(SECRETS)} secrets x "
        f"{sum(len(n) for n in needles().values())} needles, {len(written)} outputs, "
        f"{sum(map(len, written.values()))} bytes scanned, 0 found"
    )


@tool(description="Customers by e-mail address.")
def directory() -> dict:
    return {EMAIL: {"plan": "pro", "token": "tok"}, "count": 1}


def test_secrets_used_as_dict_keys_are_redacted_too(receiver, tmp_path, fake_llm_server, capfd):
    """A result keyed by e-mail address, an argument name the model made up (found by this suite; fixed in
    b4fc63b: ``Redactor.redact_json`` had left keys alone)."""
    fake_llm_server.script(
        tool_call("directory", {}),
        tool_call("lookup", {"customer": "x", OPENAI_KEY: 1}),
        tool_call("done", {"answer": "ok"}),
    )
    steps, result, spans, written = run_and_collect(
        "sync", fake_llm_server, receiver, tmp_path, capfd, [lookup, directory]
    )
    assert result.stop_reason == "done" and [s.tool_call.tool for s in steps] == [
        "directory",
        "lookup",
        "done",
    ]
    assert_no_leaks(written)


def test_a_tool_name_the_model_made_up_is_not_written_verbatim(receiver, tmp_path, fake_llm_server, capfd):
    """Found by this suite (span name, gen_ai.tool.name and the log line carried it); fixed in b4fc63b."""
    fake_llm_server.script(tool_call(EMAIL, {}), tool_call("done", {"answer": "ok"}))
    steps, result, spans, written = run_and_collect(
        "sync", fake_llm_server, receiver, tmp_path, capfd, [lookup]
    )
    assert result.stop_reason == "done" and steps[0].tool_result.error_kind == "unknown_tool"
    assert EMAIL.encode() not in written["/metrics"]
    assert_no_leaks(written)
