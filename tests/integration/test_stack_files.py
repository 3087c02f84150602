"""The observability stack's files agree with each other and with what looplet really emits.

docker-compose.yml, exporters/*.yaml, the Grafana provisioning and the dashboards are checked without Docker:
every file parses, every service, port, volume and file they name exists, and every metric a dashboard or
alert queries is one that a real ``MetricsHook`` registers (read from a live ``CollectorRegistry``).
The helpers at the top are shared with test_prometheus_live.py and tools/render_dashboards.py.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML (the dev extra) parses the stack's YAML files")

ROOT = Path(__file__).resolve().parents[2]
EXPORTERS = ROOT / "exporters"
DASHBOARDS = ROOT / "dashboards"
PROVISIONING = DASHBOARDS / "grafana" / "provisioning"
SERVICES = {"otel-collector", "tempo", "jaeger", "prometheus", "loki", "grafana", "demo-agent"}
PUBLISHED = {"grafana": 3000, "jaeger": 16686, "prometheus": 9090}  # the only UIs reachable from the host
NO_PROBE = {"otel-collector"}  # distroless image without any HTTP client: Docker cannot probe it from inside
GRAFANA_BUILTINS = {
    "__rate_interval",
    "__interval",
    "__range",
    "__interval_ms",
    "__range_s",
    "__from",
    "__to",
}

# Values the template variables take when a test or the renderer sends a query (the demo's agent and model).
DEMO_VARS = {
    "agent": "demo-agent",
    "model": "gpt-4o-mini",
    "tool": ".*",
    "min_duration": "0ms",
    "datasource": "prometheus",
    "loki": "loki",
    "tempo": "tempo",
}


# --------------------------------------------------------------------------------------------- helpers
def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def dashboard_files() -> list[Path]:
    return sorted(DASHBOARDS.glob("*.json"))


def load_dashboard(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def all_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def datasource_type(panel: dict[str, Any], target: dict[str, Any]) -> str | None:
    ds = target.get("datasource") or panel.get("datasource") or {}
    return ds.get("type")


def prometheus_queries(dashboard: dict[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(panel, target) for every Prometheus target of a dashboard."""
    for panel in all_panels(dashboard):
        for target in panel.get("targets", []):
            if datasource_type(panel, target) == "prometheus" and target.get("expr"):
                yield panel, target


def substitute(
    expr: str, *, rate_interval: str, interval: str, range_: str, values: dict[str, str] | None = None
) -> str:
    """Replace Grafana's template variables the way Grafana would for one selected value per variable."""
    values = {**DEMO_VARS, **(values or {})}
    builtins = {"__rate_interval": rate_interval, "__interval": interval, "__range": range_}

    def one(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name in builtins:
            return builtins[name]
        if name not in values:
            raise KeyError(f"no value for template variable ${name} in {expr!r}")
        return values[name]

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", one, expr)


def variables_used(text: str) -> set[str]:
    return {a or b for a, b in re.findall(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", text)}


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_MATCHERS = re.compile(r"\{([^}]*)\}")
_IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
PROMQL_WORDS = {
    "sum",
    "rate",
    "increase",
    "histogram_quantile",
    "min_over_time",
    "max_over_time",
    "avg",
    "max",
    "min",
    "count",
    "by",
    "without",
    "on",
    "ignoring",
    "or",
    "and",
    "unless",
    "vector",
    "group_left",
    "group_right",
    "label_values",
    "bool",
    "offset",
    "topk",
    "clamp_min",
    "irate",
    "avg_over_time",
    "delta",
    "deriv",
    "abs",
    "time",
    "scalar",
    "e",
    "inf",
    "nan",
}


def promql_parts(expr: str) -> tuple[set[str], set[str]]:
    """(metric names, label names) an expression uses. Not a parser: enough for the shapes our dashboards use."""
    labels: set[str] = set()
    no_strings = _STRING.sub('""', expr)
    for group in _GROUPING.findall(no_strings):
        labels.update(x.strip() for x in group.split(",") if x.strip())
    for matchers in _MATCHERS.findall(no_strings):
        labels.update(re.findall(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)", matchers))
    bare = _MATCHERS.sub(" ", _GROUPING.sub(" ", no_strings))
    bare = re.sub(r"\[[^\]]*\]", " ", bare)  # range selectors
    bare = re.sub(r"\b\d+(?:\.\d+)?(?:e[+-]?\d+)?\b", " ", bare)
    metrics = {w for w in _IDENT.findall(bare) if w.lower() not in PROMQL_WORDS}
    return metrics, labels


@cache
def metrics_hook_registry() -> Any:
    """A real MetricsHook on a private registry, after one run of the demo agent through it (streamed)."""
    import prometheus_client

    from looplet.demo import TASK, build
    from looplet.loop import composable_loop
    from looplet.state import DefaultState
    from looplet.telemetry import metrics

    registry = prometheus_client.CollectorRegistry()
    hook = metrics.MetricsHook(registry=registry)
    llm, tools, config = build(0.0, None, True)
    for _ in composable_loop(
        llm=llm,
        tools=tools,
        task=TASK,
        config=config,
        hooks=[hook],
        state=DefaultState(max_steps=config.max_steps),
    ):
        pass
    return registry


def exposed_series_names(registry: Any) -> dict[str, str]:
    """Every series name the registry's families expose -> the family name (counters get _total, histograms
    _bucket/_sum/_count, as prometheus_client renders them)."""
    suffixes = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_sum", "_count"),
        "gauge": ("",),
        "summary": ("_sum", "_count", ""),
        "info": ("_info",),
        "stateset": ("",),
        "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
        "unknown": ("",),
    }
    names: dict[str, str] = {}
    for family in registry.collect():
        for suffix in suffixes[family.type]:
            names[family.name + suffix] = family.name
    return names


def metric_labels() -> dict[str, set[str]]:
    """Family name -> its label names, from the names table MetricsHook is built from."""
    from looplet.telemetry.names import METRICS

    return {name: set(spec[2]) for name, spec in METRICS.items()}


def compose() -> dict[str, Any]:
    return load_yaml(ROOT / "docker-compose.yml")


def host_port(endpoint: str) -> tuple[str, int]:
    """'http://tempo:4317', 'tempo:4317' or '0.0.0.0:4317' -> (host, port)."""
    m = re.match(r"^(?:\w+://)?([^:/]+):(\d+)", endpoint)
    assert m, f"no host:port in {endpoint!r}"
    return m.group(1), int(m.group(2))


def bind_mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> repository path, for the ./ bind mounts of a compose service."""
    out = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("./"):
            out[target] = source[2:]
    return out


def named_mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> volume name, for the named volumes of a compose service."""
    out = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if not source.startswith(("./", "/")):
            out[target] = source
    return out


def listens_on(service_name: str) -> set[int]:
    """Ports a compose service's own config says it listens on."""
    if service_name == "tempo":
        cfg = load_yaml(EXPORTERS / "tempo.yaml")
        ports = {cfg["server"]["http_listen_port"]}
        for proto in cfg["distributor"]["receivers"]["otlp"]["protocols"].values():
            ports.add(host_port(proto["endpoint"])[1])
        return ports
    if service_name == "loki":
        cfg = load_yaml(EXPORTERS / "loki.yaml")
        return {cfg["server"]["http_listen_port"], cfg["server"]["grpc_listen_port"]}
    if service_name == "otel-collector":
        cfg = load_yaml(EXPORTERS / "otel-collector.yaml")
        ports = {host_port(p["endpoint"])[1] for p in cfg["receivers"]["otlp"]["protocols"].values()}
        ports.add(host_port(cfg["extensions"]["health_check"]["endpoint"])[1])
        for reader in cfg["service"]["telemetry"]["metrics"]["readers"]:
            ports.add(reader["pull"]["exporter"]["prometheus"]["port"])
        return ports
    if service_name == "jaeger":  # all-in-one: UI, admin/health, OTLP (enabled by COLLECTOR_OTLP_ENABLED)
        env = compose()["services"]["jaeger"].get("environment", {})
        assert env.get("COLLECTOR_OTLP_ENABLED") == "true"
        return {16686, 14269, 4317, 4318}
    if service_name == "prometheus":
        return {9090}
    if service_name == "grafana":
        return {3000}
    if service_name == "demo-agent":
        return {int(demo_args()["--metrics-port"])}
    raise AssertionError(f"unknown service {service_name}")


def demo_args() -> dict[str, str]:
    args: dict[str, str] = {}
    for item in compose()["services"]["demo-agent"]["command"]:
        key, _, value = item.partition("=")
        args[key] = value
    return args


# --------------------------------------------------------------------------------------------- compose
def test_compose_services_images_ports_and_health_checks() -> None:
    services = compose()["services"]
    assert set(services) == SERVICES
    for name, svc in services.items():
        if "build" in svc:
            dockerfile = ROOT / svc["build"]["dockerfile"]
            base = re.search(r"^FROM\s+(\S+)", dockerfile.read_text(), re.M).group(1)
            assert re.search(r":\d+\.\d+", base), f"{dockerfile.name}: base image {base} is not pinned"
        else:
            image = svc["image"]
            assert re.search(r":v?\d+\.\d+\.\d+$", image), f"{name}: image {image} is not pinned to a version"
        published = svc.get("ports", [])
        if name in PUBLISHED:
            assert published == [f"127.0.0.1:{PUBLISHED[name]}:{PUBLISHED[name]}"], name
            assert PUBLISHED[name] in listens_on(name)
        else:
            assert not published, f"{name} publishes {published}; only the UIs may"
        if name not in NO_PROBE:
            test = svc["healthcheck"]["test"]
            assert test[0] == "CMD" and any("127.0.0.1:" in part for part in test), (name, test)
            port = int(re.search(r"127\.0\.0\.1:(\d+)", " ".join(test)).group(1))
            assert port in listens_on(name), f"{name} health check probes {port}, which it does not listen on"
        for dep, cond in (
            (svc.get("depends_on") or {}).items()
            if isinstance(svc.get("depends_on"), dict)
            else ((d, {}) for d in svc.get("depends_on", []))
        ):
            assert dep in services, f"{name} depends on unknown service {dep}"
            if cond.get("condition") == "service_healthy":
                assert "healthcheck" in services[dep], (
                    f"{name} waits for {dep} to be healthy; it has no check"
                )


def test_compose_files_and_volumes_exist() -> None:
    spec = compose()
    declared = set(spec["volumes"])
    used: set[str] = set()
    for name, svc in spec["services"].items():
        for _target, source in bind_mounts(svc).items():
            assert (ROOT / source).exists(), f"{name} mounts ./{source}, which does not exist"
        used.update(named_mounts(svc).values())
    assert used == declared, f"declared but unused: {declared - used}; used but undeclared: {used - declared}"
    # The demo agent's image: every COPY source exists and survives its .dockerignore, and the extras it
    # installs exist.
    dockerfile = EXPORTERS / "demo-agent.Dockerfile"
    import tomllib

    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    wanted = re.search(r'pip install "\.\[([\w,]+)\]"', dockerfile.read_text()).group(1).split(",")
    assert set(wanted) <= extras and {"otel", "prometheus", "logs"} <= set(wanted), wanted
    ignore = (EXPORTERS / "demo-agent.Dockerfile.dockerignore").read_text().split()
    for line in dockerfile.read_text().splitlines():
        if line.startswith("COPY "):
            for src in line.split()[1:-1]:
                assert (ROOT / src).exists(), f"Dockerfile copies {src}, which does not exist"
                assert f"!{src.rstrip('/')}" in {i.rstrip("/") for i in ignore}, (
                    f"{src} is excluded by .dockerignore"
                )


def test_prometheus_service_features_and_mounted_config() -> None:
    svc = compose()["services"]["prometheus"]
    assert "--enable-feature=exemplar-storage" in svc["command"]
    assert "--web.enable-remote-write-receiver" in svc["command"]
    mounts = bind_mounts(svc)
    config_path = next(a.split("=", 1)[1] for a in svc["command"] if a.startswith("--config.file="))
    assert mounts[config_path] == "exporters/prometheus.yml"
    cfg = load_yaml(EXPORTERS / "prometheus.yml")
    for rule_file in cfg["rule_files"]:  # relative to the config file, inside the container too
        assert (EXPORTERS / rule_file).exists()
        assert mounts[str(Path(config_path).parent / rule_file)] == f"exporters/{rule_file}"
    services = compose()["services"]
    for job in cfg["scrape_configs"]:
        for sc in job["static_configs"]:
            for target in sc["targets"]:
                host, port = host_port(target)
                if host == "localhost":
                    continue
                assert host in services, f"job {job['job_name']} scrapes unknown service {host}"
                assert port in listens_on(host), (
                    f"job {job['job_name']} scrapes {host}:{port}; nothing listens"
                )


def test_demo_agent_feeds_every_pipeline() -> None:
    spec = compose()
    args = demo_args()
    assert args["demo"] == "" and args["--runs"] == "0", "the demo must run forever"
    # metrics: Prometheus's looplet job scrapes the demo's metrics port
    cfg = load_yaml(EXPORTERS / "prometheus.yml")
    job = next(j for j in cfg["scrape_configs"] if j["job_name"] == "looplet")
    assert job["static_configs"][0]["targets"] == [f"demo-agent:{args['--metrics-port']}"]
    assert args["--metrics-addr"] == "0.0.0.0", "/metrics must be reachable from the prometheus container"
    # traces: OTLP to a port the collector's OTLP receiver listens on
    host, port = host_port(args["--otlp"])
    collector = load_yaml(EXPORTERS / "otel-collector.yaml")
    otlp_ports = {host_port(p["endpoint"])[1] for p in collector["receivers"]["otlp"]["protocols"].values()}
    assert host == "otel-collector" and port in otlp_ports
    # logs: the log file is on a volume the collector mounts, where its filelog receiver looks
    log_file = Path(args["--log-file"])
    demo_vol = named_mounts(spec["services"]["demo-agent"])[str(log_file.parent)]
    collector_mounts = named_mounts(spec["services"]["otel-collector"])
    mount_point = next(t for t, v in collector_mounts.items() if v == demo_vol)
    includes = collector["receivers"]["filelog/looplet"]["include"]
    assert any(Path(mount_point, log_file.name).match(pattern) for pattern in includes), (
        mount_point,
        includes,
    )


# --------------------------------------------------------------------------------------------- collector
def test_collector_pipelines_reference_defined_components() -> None:
    cfg = load_yaml(EXPORTERS / "otel-collector.yaml")
    services = compose()["services"]
    used = {"receivers": set(), "processors": set(), "exporters": set()}
    pipelines = cfg["service"]["pipelines"]
    assert {"traces", "logs"} <= set(pipelines)
    for name, pipe in pipelines.items():
        for kind in used:
            for comp in pipe.get(kind, []):
                assert comp in cfg[kind], f"pipeline {name} uses undefined {kind[:-1]} {comp}"
                used[kind].add(comp)
        assert pipe["processors"][0] == "memory_limiter", f"{name}: memory_limiter must come first"
        assert "batch" in pipe["processors"]
    for kind, names in used.items():
        assert names == set(cfg[kind]), f"{kind} defined but unused: {set(cfg[kind]) - names}"
    assert set(cfg["service"]["extensions"]) == set(cfg["extensions"])
    # traces go to Tempo and Jaeger, logs to Loki: every exporter endpoint is a service port that listens
    exporters = {name: host_port(exp["endpoint"]) for name, exp in cfg["exporters"].items()}
    targets = {h for h, _ in exporters.values()}
    assert {"tempo", "jaeger", "loki"} <= targets
    for name, (host, port) in exporters.items():
        assert host in services, f"exporter {name} sends to unknown service {host}"
        assert port in listens_on(host), f"exporter {name} sends to {host}:{port}; nothing listens there"
    trace_targets = {exporters[e][0] for e in pipelines["traces"]["exporters"]}
    assert trace_targets == {"tempo", "jaeger"}
    assert {exporters[e][0] for e in pipelines["logs"]["exporters"]} == {"loki"}
    assert cfg["exporters"]["otlphttp/loki"]["endpoint"].endswith("/otlp")


def test_tempo_and_loki_configs() -> None:
    spec = compose()
    tempo = load_yaml(EXPORTERS / "tempo.yaml")
    tempo_volume_path = next(iter(named_mounts(spec["services"]["tempo"])))
    paths = [
        tempo["storage"]["trace"]["wal"]["path"],
        tempo["storage"]["trace"]["local"]["path"],
        tempo["metrics_generator"]["storage"]["path"],
        tempo["metrics_generator"]["traces_storage"]["path"],
    ]
    for path in paths:
        assert path.startswith(tempo_volume_path + "/"), f"Tempo writes {path} outside its volume"
    for rw in tempo["metrics_generator"]["storage"]["remote_write"]:
        host, port = host_port(rw["url"])
        assert (
            host == "prometheus" and port in listens_on("prometheus") and rw["url"].endswith("/api/v1/write")
        )
    assert "local-blocks" in tempo["overrides"]["defaults"]["metrics_generator"]["processors"]

    loki = load_yaml(EXPORTERS / "loki.yaml")
    loki_volume_path = next(iter(named_mounts(spec["services"]["loki"])))
    assert loki["common"]["path_prefix"] == loki_volume_path
    assert loki["limits_config"]["allow_structured_metadata"] is True
    assert loki["schema_config"]["configs"][-1]["schema"] == "v13"  # structured metadata needs v13 + tsdb
    indexed = {
        a
        for c in loki["limits_config"]["otlp_config"]["resource_attributes"]["attributes_config"]
        if c["action"] == "index_label"
        for a in c["attributes"]
    }
    collector = load_yaml(EXPORTERS / "otel-collector.yaml")
    set_by_collector = {a["key"] for a in collector["processors"]["resource/looplet-logs"]["attributes"]}
    assert "service.namespace" in indexed & set_by_collector


# --------------------------------------------------------------------------------------------- grafana
def provisioned_datasources() -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for path in sorted((PROVISIONING / "datasources").glob("*.yaml")):
        for ds in load_yaml(path)["datasources"]:
            assert ds["uid"] not in out, f"duplicate data source uid {ds['uid']}"
            out[ds["uid"]] = ds
    return out


def test_grafana_provisioning() -> None:
    spec = compose()
    grafana = spec["services"]["grafana"]
    env = grafana["environment"]
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true" and env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    mounts = bind_mounts(grafana)
    assert mounts["/etc/grafana/provisioning"] == "dashboards/grafana/provisioning"
    sources = provisioned_datasources()
    assert {ds["type"] for ds in sources.values()} >= {"prometheus", "tempo", "loki", "jaeger"}
    for uid, ds in sources.items():
        host, port = host_port(ds["url"])
        assert host in spec["services"] and port in listens_on(host), f"data source {uid} -> {ds['url']}"
    prom = sources["prometheus"]["jsonData"]
    assert {d["datasourceUid"] for d in prom["exemplarTraceIdDestinations"]} <= set(sources)
    assert [d["name"] for d in prom["exemplarTraceIdDestinations"]] == ["trace_id"]
    for field in sources["loki"]["jsonData"]["derivedFields"]:
        assert field["datasourceUid"] in sources
        re.compile(field["matcherRegex"])
    tempo = sources["tempo"]["jsonData"]
    assert (
        tempo["tracesToLogsV2"]["datasourceUid"] in sources
        and tempo["serviceMap"]["datasourceUid"] in sources
    )
    # dashboards: the provider's path is where ./dashboards is mounted, and the home dashboard is one of ours
    provider = load_yaml(PROVISIONING / "dashboards" / "looplet.yaml")["providers"][0]
    assert mounts[provider["options"]["path"]] == "dashboards"
    home = Path(env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"])
    assert (DASHBOARDS / home.relative_to(provider["options"]["path"])).exists()


def test_derived_field_finds_the_trace_id_in_a_json_log_line() -> None:
    regex = provisioned_datasources()["loki"]["jsonData"]["derivedFields"][0]["matcherRegex"]
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    for line in (
        json.dumps({"event": "tool_call", "trace_id": trace_id}),
        json.dumps({"event": "tool_call", "trace_id": trace_id}, separators=(",", ":")),
    ):
        assert re.search(regex, line).group(1) == trace_id
    assert not re.search(regex, json.dumps({"event": "x", "run_id": trace_id}))


# --------------------------------------------------------------------------------------------- dashboards
@pytest.mark.parametrize("path", dashboard_files(), ids=lambda p: p.stem)
def test_dashboard_structure(path: Path) -> None:
    board = load_dashboard(path)
    sources = provisioned_datasources()
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert {"agent", "model"} <= set(variables), f"{path.name} needs agent and model variables"
    ds_vars = {name: v["query"] for name, v in variables.items() if v["type"] == "datasource"}
    for name in ds_vars:
        assert variables[name]["current"]["value"] in sources
    ids = [p["id"] for p in all_panels(board)]
    assert len(ids) == len(set(ids)), f"{path.name}: duplicate panel ids"
    cells: set[tuple[int, int]] = set()
    for panel in all_panels(board):
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, f"{path.name}: panel {panel['id']} is wider than the grid"
        own = {(pos["x"] + i, pos["y"] + j) for i in range(pos["w"]) for j in range(pos["h"])}
        assert not own & cells, f"{path.name}: panel {panel['id']} overlaps another"
        cells |= own
        if panel["type"] == "row":
            continue
        assert panel.get("title") and panel.get("description"), (
            f"{path.name}: panel {panel['id']} unexplained"
        )
        assert panel.get("targets"), f"{path.name}: panel {panel['title']!r} has no query"
        for target in panel["targets"]:
            ds = target.get("datasource") or panel.get("datasource")
            assert ds and ds.get("type") and ds.get("uid"), (
                f"{path.name}: {panel['title']!r} target lacks a datasource"
            )
            uid = ds["uid"]
            if uid.startswith("${"):
                assert ds_vars.get(uid[2:-1]) == ds["type"], (
                    f"{path.name}: {uid} is not a {ds['type']} variable"
                )
            else:
                assert sources[uid]["type"] == ds["type"]
            text = target.get("expr") or target.get("query") or ""
            unknown = variables_used(text) - set(variables) - GRAFANA_BUILTINS
            assert not unknown, f"{path.name}: {panel['title']!r} uses undefined variables {unknown}"
        if panel.get("repeat"):
            assert panel["repeat"] in variables


def test_dashboards_cover_the_issue() -> None:
    titles = {
        load_dashboard(p)["title"]: {x.get("title") for x in all_panels(load_dashboard(p))}
        for p in dashboard_files()
    }
    assert set(titles) == {
        "looplet / Agents overview",
        "looplet / LLM cost",
        "looplet / Tools",
        "looplet / Traces",
    }
    uids = [load_dashboard(p)["uid"] for p in dashboard_files()]
    assert len(set(uids)) == len(uids)
    overview = load_dashboard(DASHBOARDS / "agents-overview.json")
    kinds = {datasource_type(p, t) for p in all_panels(overview) for t in p.get("targets", [])}
    assert {"prometheus", "loki"} <= kinds, "the overview has metrics and an error-log panel"
    exemplar_panels = [p for p, t in prometheus_queries(overview) if t.get("exemplar")]
    assert exemplar_panels, "latency panels must show exemplars"
    assert any("time_to_first_chunk" in t["expr"] for _, t in prometheus_queries(overview))
    traces = load_dashboard(DASHBOARDS / "traces.json")
    assert (
        sum(1 for p in all_panels(traces) for t in p.get("targets", []) if datasource_type(p, t) == "tempo")
        >= 2
    )


def every_promql() -> list[tuple[str, str, str]]:
    """(where, expression) for every PromQL text we ship: dashboard targets, variable queries, alert rules."""
    out = []
    for path in dashboard_files():
        board = load_dashboard(path)
        for panel, target in prometheus_queries(board):
            out.append((f"{path.stem}: {panel['title']} [{target['refId']}]", target["expr"]))
        for var in board["templating"]["list"]:
            if var["type"] == "query":
                out.append((f"{path.stem}: variable {var['name']}", var["definition"]))
    for group in load_yaml(EXPORTERS / "alerts.yml")["groups"]:
        for rule in group["rules"]:
            out.append((f"alerts.yml: {rule.get('alert') or rule.get('record')}", rule["expr"]))
    return out


def test_queries_use_only_metrics_and_labels_metrics_hook_exposes() -> None:
    registry = metrics_hook_registry()
    exposed = exposed_series_names(registry)
    labels = metric_labels()
    problems = []
    used_families = set()
    for where, expr in every_promql():
        metrics, used_labels = promql_parts(
            re.sub(r"label_values\((\w+)[^,]*,\s*(\w+)\)", r"\1 by (\2)", expr)
        )
        for metric in metrics:
            if metric not in exposed:
                problems.append(f"{where}: {metric} is not exposed by MetricsHook")
                continue
            used_families.add(exposed[metric])
        allowed = {"le"} | set().union(*(labels.get(exposed.get(m, ""), set()) for m in metrics))
        if used_labels - allowed:
            problems.append(f"{where}: labels {sorted(used_labels - allowed)} are not on {sorted(metrics)}")
    assert not problems, "\n".join(problems)
    # the core families all have a panel
    core = {
        "looplet_runs",
        "looplet_active_runs",
        "looplet_steps",
        "looplet_llm_requests",
        "looplet_tokens",
        "looplet_cost_usd",
        "looplet_llm_duration_seconds",
        "looplet_tool_duration_seconds",
        "looplet_tool_errors",
        "looplet_hook_denials",
        "gen_ai_client_operation_time_to_first_chunk_seconds",
    }
    assert core <= used_families, f"no panel for {core - used_families}"


def test_promql_parts_finds_metrics_and_labels() -> None:
    metrics, labels = promql_parts(
        "histogram_quantile(0.95, sum by (le, model) (rate(looplet_llm_duration_seconds_"
        'bucket{agent=~"$agent", model!="x{y}"}[5m]))) / on(model) foo_total > 0.5'
    )
    assert metrics == {"looplet_llm_duration_seconds_bucket", "foo_total"}
    assert labels == {"le", "model", "agent"}


# --------------------------------------------------------------------------------------------- logs / traces
def test_loki_query_filters_on_keys_the_logs_carry() -> None:
    from looplet.telemetry.names import LOG_KEYS

    collector = load_yaml(EXPORTERS / "otel-collector.yaml")
    resource = {
        a["key"].replace(".", "_"): a["value"]
        for a in collector["processors"]["resource/looplet-logs"]["attributes"]
    }
    for path in dashboard_files():
        board = load_dashboard(path)
        for panel in all_panels(board):
            for target in panel.get("targets", []):
                if datasource_type(panel, target) != "loki":
                    continue
                expr = target["expr"]
                stream = dict(re.findall(r'(\w+)="([^"]*)"', re.match(r"\{([^}]*)\}", expr).group(1)))
                assert stream.items() <= resource.items(), (
                    f"stream selector {stream} never matches {resource}"
                )
                filters = set(re.findall(r"\b(\w+)\s*(?:=~|!~|!=|=)", expr[expr.index("}") + 1 :]))
                assert filters <= set(LOG_KEYS), (
                    f"{panel['title']}: {filters - set(LOG_KEYS)} are not log keys"
                )


def traceql_attributes() -> set[str]:
    found = set()
    for path in dashboard_files():
        for panel in all_panels(load_dashboard(path)):
            for target in panel.get("targets", []):
                if datasource_type(panel, target) == "tempo":
                    found |= set(re.findall(r"\bspan\.([\w.]+)", target["query"]))
    return found


def test_traceql_uses_attribute_names_from_the_names_table() -> None:
    from looplet.telemetry import names

    known = {v for k, v in vars(names).items() if k.isupper() and isinstance(v, str)}
    known |= {
        getattr(names, k)
        for k in (
            "GEN_AI_OPERATION_NAME",
            "GEN_AI_AGENT_NAME",
            "GEN_AI_TOOL_NAME",
            "GEN_AI_REQUEST_MODEL",
            "ERROR_TYPE",
        )
    }
    assert traceql_attributes() <= known, traceql_attributes() - known


class _Missing:
    """A span attribute that is not there: every comparison with it is false, as in TraceQL."""

    def __eq__(self, other: object) -> bool:
        return False

    __ne__ = __eq__
    __hash__ = None  # type: ignore[assignment]


def traceql_matcher(query: str) -> Any:
    """A predicate over finished OpenTelemetry spans for the subset of TraceQL our dashboards use
    (one spanset filter with &&, ||, parentheses, =, !=, =~, status and duration; `| select` is ignored)."""
    body = re.fullmatch(r"\s*\{(.*)\}\s*(?:\|\s*select\([^)]*\)\s*)?", query, re.S)
    assert body, f"unsupported TraceQL: {query}"
    units = {"ns": 1, "ms": 10**6, "s": 10**9, "m": 60 * 10**9}
    py = body.group(1)
    py = re.sub(r"\bspan\.([\w.]+)", r'A("\1")', py)
    py = re.sub(r"\bstatus\s*=\s*(error|ok|unset)\b", r'(S() == "\1")', py)
    py = re.sub(
        r"\bduration\s*([<>]=?)\s*(\d+)(ns|ms|s|m)\b",
        lambda m: f"(D() {m.group(1)} {int(m.group(2)) * units[m.group(3)]})",
        py,
    )
    py = re.sub(r'(A\("[^"]+"\))\s*=~\s*("(?:[^"\\]|\\.)*")', r"RX(\1, \2)", py)
    py = re.sub(r'(A\("[^"]+"\))\s*!~\s*("(?:[^"\\]|\\.)*")', r"(not RX(\1, \2))", py)
    py = re.sub(r"(?<![=!<>])=(?!=)", "==", py).replace("&&", " and ").replace("||", " or ")
    code = compile(py.strip(), "<traceql>", "eval")

    def matches(span: Any) -> bool:
        from opentelemetry.trace import StatusCode

        def status() -> str:
            return {StatusCode.ERROR: "error", StatusCode.OK: "ok"}.get(span.status.status_code, "unset")

        env = {
            "A": lambda key: span.attributes.get(key, _Missing()),
            "S": status,
            "D": lambda: span.end_time - span.start_time,
            "RX": lambda value, pattern: isinstance(value, str) and re.fullmatch(pattern, value) is not None,
        }
        return bool(eval(code, {"__builtins__": {}}, env))

    return matches


@cache
def traced_runs() -> tuple[Any, ...]:
    """Spans of one real (streamed) demo run and of one run whose LLM call fails, through TracingHook."""
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from looplet.config import LoopConfig
    from looplet.demo import TASK, build
    from looplet.errors import LLMError
    from looplet.loop import run_loop
    from looplet.state import DefaultState
    from looplet.telemetry.tracing import TracingHook

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    hook = TracingHook(tracer_provider=provider)
    llm, tools, config = build(0.0, None, True)
    run_loop(
        llm=llm, tools=tools, task=TASK, config=config, hooks=[hook], state=DefaultState(config.max_steps)
    )

    class Down:
        model = "gpt-4o-mini"

        def generate(self, messages: Any, *, tools: Any = None, **options: Any) -> Any:
            raise LLMError("upstream said 400", retryable=False, status=400)

    broken = LoopConfig(max_steps=3, agent_name="demo-agent", llm_retries=0)
    result = run_loop(llm=Down(), tools=tools, task=TASK, config=broken, hooks=[hook], state=DefaultState(3))
    assert result.stop_reason == "llm_error"
    provider.shutdown()
    return tuple(exporter.get_finished_spans())


def test_traceql_panels_find_the_spans_they_promise() -> None:
    """Each Tempo panel's query, evaluated on real TracingHook spans, finds what its title says and only that."""
    spans = traced_runs()
    runs = [s for s in spans if s.name.startswith("invoke_agent")]
    failed_run = [s for s in runs if s.attributes.get("looplet.stop_reason") == "llm_error"]
    assert len(runs) == 2 and len(failed_run) == 1
    failed_tools = [
        s for s in spans if s.name == "execute_tool fetch_page" and s.status.status_code.name == "ERROR"
    ]
    failed_chats = [s for s in spans if s.name.startswith("chat") and s.status.status_code.name == "ERROR"]
    assert failed_tools and failed_chats
    expected = {
        "Slowest runs": runs,
        "Failed runs": failed_run,
        "Failed tool calls": failed_tools,
        "Failed LLM calls": failed_chats,
    }
    seen = set()
    for path in dashboard_files():
        for panel in all_panels(load_dashboard(path)):
            for target in panel.get("targets", []):
                if datasource_type(panel, target) != "tempo":
                    continue
                query = substitute(target["query"], rate_interval="", interval="", range_="")
                matcher = traceql_matcher(query)
                found = [s for s in spans if matcher(s)]
                want = expected[panel["title"]]
                assert {id(s) for s in found} == {id(s) for s in want}, (
                    panel["title"],
                    [s.name for s in found],
                )
                selected = (
                    re.findall(r"span\.([\w.]+)", query.split("| select", 1)[-1]) if "select" in query else []
                )
                for key in selected:
                    assert any(key in s.attributes for s in found), f"{panel['title']}: no span has {key}"
                seen.add(panel["title"])
    assert seen == set(expected)


@pytest.mark.skipif(
    shutil.which("docker-compose") is None, reason="docker-compose (v1, Debian package) not installed"
)
def test_compose_file_passes_docker_compose_config(tmp_path: Path) -> None:
    """Schema validation by docker-compose's own `config` (no Docker daemon needed). Compose v1 predates the
    top-level `name` key, so it is left out of the copy it checks."""
    text = (ROOT / "docker-compose.yml").read_text()
    copy = tmp_path / "docker-compose.yml"
    copy.write_text("\n".join(line for line in text.splitlines() if not line.startswith("name:")))
    proc = subprocess.run(
        ["docker-compose", "--project-directory", str(ROOT), "-f", str(copy), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
