"""Every PromQL expression of every dashboard, run against a real Prometheus scraping a real demo agent.

A real ``prometheus`` (Debian package; ``.ci/run`` installs it) is started on 127.0.0.1 with a config generated
from exporters/prometheus.yml (the looplet job pointed at the demo, a 1 s scrape interval, a temporary storage
dir, exemplar storage on) and the alert rules of exporters/alerts.yml. ``python -m looplet demo`` runs with
``--stream --metrics-port`` for a few scrape intervals; then each dashboard expression, with its template
variables filled in, goes to the HTTP API and must succeed and return data. ``LiveStack`` is also what
tools/render_dashboards.py uses to draw the pictures in docs/dashboards.md.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_stack_files import (
    EXPORTERS,
    ROOT,
    dashboard_files,
    load_dashboard,
    load_yaml,
    prometheus_queries,
    provisioned_datasources,
    substitute,
    yaml,
)

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
needs_prometheus = pytest.mark.skipif(
    PROMETHEUS is None,
    reason="the `prometheus` binary is not installed (Debian: apt-get install prometheus; "
    ".ci/run installs it)",
)
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="`promtool` is not installed (Debian package prometheus)"
)

SCRAPE_S = 1
RATE_INTERVAL = (
    "10s"  # Grafana's $__rate_interval is at least 4 scrape intervals; 10 s holds ~10 samples here
)
RANGE = "5m"
DEFAULT_INTERVAL = "2s"

# Expressions this demo run cannot fill, with the reason (printed by the test). Any other empty expression
# fails the test, and so does one listed here that starts returning data (then remove it from here).
KNOWN_GAPS: dict[str, str] = {}  # panels the demo run cannot fill (none: keep it that way)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.read()


class LiveStack:
    """A demo agent serving /metrics and a Prometheus scraping it, both on 127.0.0.1, in ``workdir``."""

    def __init__(
        self,
        workdir: Path,
        *,
        latency: float = 0.01,
        scrape_s: int = SCRAPE_S,
        demo_extra: tuple[str, ...] = (),
        demo_cmd: tuple[str, ...] | None = None,
    ) -> None:
        self.workdir = workdir
        self.metrics_port = free_port()
        self.prom_port = free_port()
        self.log_file = workdir / "demo-agent.jsonl"
        self.scrape_s = scrape_s
        self.latency = latency
        self.demo_extra = demo_extra
        self.demo_cmd = demo_cmd or (sys.executable, "-m", "looplet", "demo")
        self.demo: subprocess.Popen[bytes] | None = None
        self.prom: subprocess.Popen[bytes] | None = None
        self.started = 0.0

    # -- lifecycle ------------------------------------------------------------------------------
    def __enter__(self) -> LiveStack:
        try:
            self._start_demo()
            self._start_prometheus()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for proc in (self.prom, self.demo):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)

    def _start_demo(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}  # nothing leaves loopback
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        cmd = [
            *self.demo_cmd,
            "--runs",
            "0",
            "--stream",
            "--latency",
            str(self.latency),
            "--quiet",
            "--metrics-port",
            str(self.metrics_port),
            "--log-file",
            str(self.log_file),
            *self.demo_extra,
        ]
        self.demo_stderr = (self.workdir / "demo.stderr").open("wb")
        self.demo = subprocess.Popen(
            cmd, cwd=self.workdir, env=env, stdout=subprocess.DEVNULL, stderr=self.demo_stderr
        )
        self._wait(
            lambda: b"looplet_" in http_get(f"http://127.0.0.1:{self.metrics_port}/metrics", 1),
            20,
            "the demo agent to serve /metrics",
            self.demo,
            self.workdir / "demo.stderr",
        )

    def prometheus_config(self) -> dict[str, Any]:
        """exporters/prometheus.yml with the looplet job pointed at this demo and the other jobs dropped."""
        cfg = load_yaml(EXPORTERS / "prometheus.yml")
        cfg["global"]["scrape_interval"] = f"{self.scrape_s}s"
        cfg["global"]["evaluation_interval"] = f"{self.scrape_s}s"
        jobs = [j for j in cfg["scrape_configs"] if j["job_name"] == "looplet"]
        assert len(jobs) == 1, "exporters/prometheus.yml must have exactly one `looplet` job"
        jobs[0]["scrape_interval"] = f"{self.scrape_s}s"
        jobs[0]["static_configs"] = [{"targets": [f"127.0.0.1:{self.metrics_port}"]}]
        cfg["scrape_configs"] = jobs
        return cfg

    def _start_prometheus(self) -> None:
        assert PROMETHEUS is not None
        cfg = self.prometheus_config()
        for rule_file in cfg.get("rule_files", []):
            shutil.copy(EXPORTERS / rule_file, self.workdir / rule_file)
        self.config_path = self.workdir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        (self.workdir / "data").mkdir(exist_ok=True)
        self.prom_log = (self.workdir / "prometheus.log").open("wb")
        self.prom = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={self.config_path}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.prom_port}",
                "--enable-feature=exemplar-storage",
                "--web.enable-remote-write-receiver",
                "--log.level=warn",
            ],
            cwd=self.workdir,
            stdout=self.prom_log,
            stderr=subprocess.STDOUT,
        )
        self._wait(
            lambda: http_get(f"{self.url}/-/ready", 1) is not None,
            20,
            "Prometheus to be ready",
            self.prom,
            self.workdir / "prometheus.log",
        )
        self.started = time.time()

    @staticmethod
    def _wait(check: Any, timeout: float, what: str, proc: subprocess.Popen[bytes], log: Path) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(
                    f"gave up waiting for {what}: the process exited ({proc.returncode}):\n"
                    f"{log.read_text(errors='replace')[-3000:]}"
                )
            try:
                if check():
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(
            f"gave up waiting for {what} after {timeout} s:\n{log.read_text(errors='replace')[-3000:]}"
        )

    # -- queries --------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.prom_port}"

    def api(self, path: str, **params: Any) -> Any:
        body = json.loads(http_get(f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}", 10))
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        return data["result"]

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        return self.api("query_range", query=expr, start=start, end=end, step=step)["result"]

    def wait_for_scrapes(self, n: int, timeout: float = 30) -> None:
        """Until the looplet job has been scraped ``n`` times with finished runs in every scrape."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.query("max(count_over_time(looplet_runs_total[1m]))")
            if got and float(got[0]["value"][1]) >= n:
                return
            time.sleep(0.25)
        raise AssertionError(f"Prometheus did not get {n} scrapes with finished runs in {timeout} s")


def dashboard_expressions() -> list[tuple[str, str]]:
    """(label, PromQL with the variables filled in) for every Prometheus target of every dashboard."""
    out = []
    for path in dashboard_files():
        board = load_dashboard(path)
        for panel, target in prometheus_queries(board):
            interval = panel.get("interval") or target.get("interval") or DEFAULT_INTERVAL
            expr = substitute(target["expr"], rate_interval=RATE_INTERVAL, interval=interval, range_=RANGE)
            out.append((f"{path.stem} / {panel['title']} [{target['refId']}]", expr))
    return out


def finite_values(result: list[dict[str, Any]]) -> list[float]:
    return [v for v in (float(r["value"][1]) for r in result) if math.isfinite(v)]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Any:
    if PROMETHEUS is None:
        pytest.skip("the `prometheus` binary is not installed (Debian: apt-get install prometheus)")
    with LiveStack(tmp_path_factory.mktemp("prom")) as live:
        live.wait_for_scrapes(8)
        yield live


# --------------------------------------------------------------------------------------------- tests
@needs_prometheus
def test_every_dashboard_expression_returns_data(stack: LiveStack) -> None:
    exprs = dashboard_expressions()
    assert len(exprs) >= 30
    assert set(KNOWN_GAPS) <= {label for label, _ in exprs}, "KNOWN_GAPS names a panel that no longer exists"
    failed, empty, filled_gaps = [], [], []
    for label, expr in exprs:
        try:
            result = stack.query(expr)
        except Exception as exc:
            failed.append(f"{label}: {expr}\n    {exc}")
            continue
        has_data = bool(finite_values(result))
        if label in KNOWN_GAPS:
            if has_data:
                filled_gaps.append(label)
        elif not has_data:
            empty.append(f"{label}: {expr} -> {result[:3]}")
    assert not failed, "queries Prometheus refused:\n" + "\n".join(failed)
    assert not empty, "queries that returned no (finite) data from the demo run:\n" + "\n".join(empty)
    assert not filled_gaps, f"these now return data; remove them from KNOWN_GAPS: {filled_gaps}"
    for label, reason in KNOWN_GAPS.items():
        print(f"known gap: {label}: {reason}")


@needs_prometheus
def test_template_variables_list_the_demo_agent_model_and_tools(stack: LiveStack) -> None:
    for path in dashboard_files():
        for var in load_dashboard(path)["templating"]["list"]:
            if var["type"] != "query":
                continue
            m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", var["definition"])
            assert m, var["definition"]
            selector = substitute(
                m.group(1), rate_interval=RATE_INTERVAL, interval=DEFAULT_INTERVAL, range_=RANGE
            )
            values = stack.api(f"label/{m.group(2)}/values", **{"match[]": selector})
            expected = {
                "agent": {"demo-agent"},
                "model": {"gpt-4o-mini"},
                "tool": {"search_docs", "fetch_page", "calculator", "done"},
            }[var["name"]]
            assert expected <= set(values), (path.name, var["name"], values)


@needs_prometheus
def test_alert_rules_load_and_evaluate_on_real_data(stack: LiveStack) -> None:
    deadline = time.monotonic() + 10
    while True:
        rules = [r for g in stack.api("rules")["groups"] for r in g["rules"]]
        if rules and all(not r["lastEvaluation"].startswith("0001") for r in rules):
            break
        assert time.monotonic() < deadline, "the alert rules were never evaluated"
        time.sleep(0.25)
    names = {r["name"] for r in rules}
    assert names == {
        "LoopletRunErrorRateHigh",
        "LoopletToolErrorRateHigh",
        "LoopletLLMLatencyP95High",
        "LoopletSpendPerHourHigh",
        "LoopletRunStuck",
    }
    assert all(r["health"] == "ok" and not r.get("lastError") for r in rules), rules
    # The demo is healthy: a few cents an hour, millisecond latency, runs that finish. Nothing may fire.
    assert [r["name"] for r in rules if r["state"] != "inactive"] == []


@needs_prometheus
def test_exemplars_carry_trace_ids_that_the_logs_also_carry(stack: LiveStack) -> None:
    now = time.time()
    data = stack.api("query_exemplars", query="looplet_llm_duration_seconds_bucket", start=now - 300, end=now)
    trace_ids = {ex["labels"].get("trace_id") for series in data for ex in series["exemplars"]}
    trace_ids.discard(None)
    assert trace_ids, f"no exemplar with a trace_id label on the LLM latency histogram: {data[:2]}"
    assert all(re.fullmatch(r"[0-9a-f]{32}", t) for t in trace_ids), trace_ids
    regex = provisioned_datasources()["loki"]["jsonData"]["derivedFields"][0]["matcherRegex"]
    lines = stack.log_file.read_text().splitlines()
    logged = {m.group(1) for line in lines if (m := re.search(regex, line))}
    assert trace_ids & logged, "Grafana could not go from a latency exemplar to the same trace's log lines"


@needs_prometheus
def test_demo_logs_fill_the_error_log_panel(stack: LiveStack) -> None:
    """The overview's Loki panel keeps lines at level error/warning or with an error field, for the agent."""
    records = [json.loads(line) for line in stack.log_file.read_text().splitlines() if line.strip()]
    assert records, "the demo wrote no JSON log lines"
    kept = [
        r
        for r in records
        if r.get("agent") == "demo-agent" and (r.get("level") in ("error", "warning") or r.get("error"))
    ]
    assert kept, f"no error log line from the demo (its fetch_page call fails every run): {records[:5]}"
    assert all(re.fullmatch(r"[0-9a-f]{32}", r.get("trace_id", "")) for r in kept), kept[:3]


# --------------------------------------------------------------------------------------------- promtool
@needs_promtool
def test_promtool_checks_config_and_rules() -> None:
    for args in (
        ["check", "config", str(EXPORTERS / "prometheus.yml")],
        ["check", "rules", str(EXPORTERS / "alerts.yml")],
    ):
        proc = subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stdout + proc.stderr


@needs_promtool
def test_promtool_unit_tests_of_the_alerts() -> None:
    proc = subprocess.run(
        [PROMTOOL, "test", "rules", "alerts_test.yml"],
        cwd=EXPORTERS,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0 and "SUCCESS" in proc.stdout, proc.stdout + proc.stderr


@needs_promtool
def test_promtool_fails_a_broken_alert(tmp_path: Path) -> None:
    """The unit tests have teeth: raise the spend threshold and the spend test must fail."""
    for name in ("alerts.yml", "alerts_test.yml"):
        shutil.copy(EXPORTERS / name, tmp_path / name)
    rules = (tmp_path / "alerts.yml").read_text()
    (tmp_path / "alerts.yml").write_text(rules.replace("* 3600\n          > 10", "* 3600\n          > 100"))
    assert rules != (tmp_path / "alerts.yml").read_text()
    proc = subprocess.run(
        [PROMTOOL, "test", "rules", "alerts_test.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0 and "LoopletSpendPerHourHigh" in proc.stdout + proc.stderr


@needs_promtool
def test_generated_live_config_is_valid(tmp_path: Path) -> None:
    live = LiveStack(tmp_path)
    cfg = live.prometheus_config()
    shutil.copy(EXPORTERS / "alerts.yml", tmp_path / "alerts.yml")
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(cfg))
    proc = subprocess.run(
        [PROMTOOL, "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert cfg["scrape_configs"][0]["static_configs"] == [{"targets": [f"127.0.0.1:{live.metrics_port}"]}]
