"""deploy/monitoring/: the Grafana dashboard and the Prometheus alerts use only metrics the agent
and the Temporal SDK export, in expressions that are well formed, and cover what an operator must see.

promtool is not available: expressions are checked structurally (balanced brackets and quotes,
label matchers, range selectors, known functions, histogram_quantile over buckets by ``le``), and
every metric name in them must be one agent/metrics.py exports (the workflow-recorded ones as the
SDK's runtime serves them, scraped) or one of the SDK's own (from the sdk-core sources bundled with
temporalio).
"""

from __future__ import annotations

import ast
import json
import re
import time
import urllib.request
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import temporalio
import yaml
from prometheus_client.metrics import MetricWrapperBase

import agent.metrics as agent_metrics
from tests.kustomize import DEPLOY, MONITORING, REPO, of_kind, one, render

DASHBOARD = MONITORING / "gateway-agent-dashboard.json"
SDK_CORE = Path(temporalio.__file__).parent / "bridge" / "sdk-core" / "crates"
# Labels Prometheus adds at scrape (ServiceMonitor targets) or the SDK's runtime adds.
FUNCTIONS = {
    "abs", "absent", "absent_over_time", "avg", "avg_over_time", "ceil", "clamp_max", "clamp_min", "count",
    "count_over_time", "delta", "deriv", "floor", "histogram_quantile", "increase", "irate", "label_replace",
    "max", "max_over_time", "min", "min_over_time", "quantile", "rate", "round", "scalar", "sort", "sort_desc",
    "stddev", "sum", "sum_over_time", "time", "topk", "bottomk", "vector", "last_over_time",
}  # fmt: skip
KEYWORDS = {"by", "without", "and", "or", "unless", "on", "ignoring", "group_left", "group_right", "bool", "offset"}
RANGE = re.compile(r"^(\d+[smhdwy]|\$__rate_interval|\$__range|\$__interval)$")
MATCHER = re.compile(r'^\s*[a-zA-Z_][a-zA-Z0-9_]*\s*(=~|!~|!=|=)\s*"[^"]*"\s*$')
DURATION = re.compile(r"^\d+[smhdw]$")
SEVERITIES = {"critical", "warning", "info"}

RULE_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PrometheusRule"},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["groups"],
            "properties": {
                "groups": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["name", "rules"],
                        "properties": {
                            "name": {"type": "string", "minLength": 1},
                            "interval": {"type": "string", "pattern": DURATION.pattern},
                            "rules": {
                                "type": "array",
                                "minItems": 1,
                                "items": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "required": ["alert", "expr", "labels", "annotations"],
                                    "properties": {
                                        "alert": {"type": "string", "pattern": "^[A-Z][A-Za-z0-9]+$"},
                                        "expr": {"type": "string", "minLength": 1},
                                        "for": {"type": "string", "pattern": DURATION.pattern},
                                        "labels": {
                                            "type": "object",
                                            "required": ["severity"],
                                            "properties": {"severity": {"enum": sorted(SEVERITIES)}},
                                        },
                                        "annotations": {
                                            "type": "object",
                                            "required": ["summary", "description"],
                                            "additionalProperties": {"type": "string"},
                                        },
                                    },
                                },
                            },
                        },
                    },
                }
            },
        },
    },
}


# ---------------------------------------------------------------------- what is exported


def _workflow_instruments() -> list[tuple[str, str]]:
    """(method, name) of every ``metric_meter().create_*(NAME, ...)`` in agent/metrics.py."""
    source = Path(agent_metrics.__file__).read_text()
    found = []
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr.startswith("create_")
            and node.args
            and isinstance(node.args[0], ast.Name)
        ):
            found.append((node.func.attr, getattr(agent_metrics, node.args[0].id)))
    assert found, "agent/metrics.py records no workflow metrics?"
    return found


@lru_cache
def agent_names() -> frozenset[str]:
    """Every sample name agent/metrics.py exports."""
    names: set[str] = set()
    suffixes = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count"),
                "summary": ("_sum", "_count"), "info": ("_info",)}  # fmt: skip
    for value in vars(agent_metrics).values():
        if isinstance(value, MetricWrapperBase):
            for family in value.describe():
                names |= {family.name + s for s in suffixes[family.type]}
    # The workflow-recorded ones, as the SDK's runtime (configured as the agent configures it) serves them.
    runtime, url = agent_metrics.temporal_runtime()
    meter = runtime.metric_meter
    for method, name in _workflow_instruments():
        instrument = getattr(meter, method)(name, "test")
        (instrument.add if hasattr(instrument, "add") else instrument.record if hasattr(instrument, "record")
         else instrument.set)(1)  # fmt: skip
    deadline = time.monotonic() + 10
    while True:
        text = urllib.request.urlopen(url, timeout=5).read().decode()
        served = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}
        if all(any(s.startswith(name) for s in served) for _, name in _workflow_instruments()):
            break
        assert time.monotonic() < deadline, f"the runtime did not serve the workflow metrics: {sorted(served)}"
        time.sleep(0.2)
    return frozenset(names | {s for s in served if s.startswith("gateway_agent_")})


@lru_cache
def sdk_names() -> frozenset[str] | None:
    """``temporal_*`` sample names the SDK may export, from the bundled sdk-core sources (None: absent)."""
    if not SDK_CORE.is_dir():
        return None
    base: set[str] = set()
    for path in SDK_CORE.glob("*/src/**/*.rs"):
        if "telemetry" not in str(path) and path.name != "metrics.rs":
            continue
        text = path.read_text(errors="replace")
        base |= set(re.findall(r'name:\s*"([a-z_]+)"\.into\(\)', text))
        base |= set(re.findall(r'const [A-Z_]+_NAME: &str =\s*"([a-z_]+)"', text))
    suffixes = ("", "_total", "_bucket", "_sum", "_count", "_seconds_bucket", "_seconds_sum", "_seconds_count")
    return frozenset(f"temporal_{n}{s}" for n in base for s in suffixes)


# ---------------------------------------------------------------------- PromQL, structurally


def _strip_strings(expr: str) -> str:
    return re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)


def promql_problems(expr: str) -> list[str]:
    problems = []
    if expr.count('"') % 2:
        problems.append("unbalanced quotes")
    plain = _strip_strings(expr)
    stack = []
    for ch in plain:
        if ch in "([{":
            stack.append(ch)
        elif ch in ")]}":
            if not stack or "([{"[")]}".index(ch)] != stack.pop():
                problems.append(f"unbalanced {ch}")
                break
    if stack:
        problems.append(f"unclosed {''.join(stack)}")
    for body in re.findall(r"\{([^}]*)\}", expr):
        for matcher in filter(str.strip, body.split(",")):
            if not MATCHER.match(matcher):
                problems.append(f"bad label matcher {matcher!r}")
    for selector in re.findall(r"\[([^\]]*)\]", plain):
        if not RANGE.match(selector):
            problems.append(f"bad range selector [{selector}]")
    for function in re.findall(r"([a-z_]+)\s*\(", plain):
        if function not in FUNCTIONS | KEYWORDS:
            problems.append(f"unknown function {function}")
    for match in re.finditer(r"histogram_quantile\(\s*([0-9.]+)\s*,", plain):
        if not 0 <= float(match.group(1)) <= 1:
            problems.append(f"quantile {match.group(1)} outside [0, 1]")
    for inner in re.findall(r"histogram_quantile\([^,]+,(.*)", plain):
        if "_bucket" not in inner or not re.search(r"by\s*\([^)]*\ble\b", inner):
            problems.append("histogram_quantile needs a _bucket rate summed by le")
    for function, argument in re.findall(r"\b(rate|increase|irate)\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)", plain):
        if not argument.endswith(("_total", "_bucket", "_count", "_sum")):
            problems.append(f"{function}() of {argument}, which is not a counter")
    return problems


def metric_names(expr: str) -> set[str]:
    plain = _strip_strings(expr)
    plain = re.sub(r"\{[^}]*\}", " ", plain)
    plain = re.sub(r"\[[^\]]*\]", " ", plain)
    plain = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", plain)
    names = set()
    for match in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", plain):
        word = match.group(0)
        following = plain[match.end() :].lstrip()[:1]
        if word in KEYWORDS or following == "(" or re.fullmatch(r"\d+[smhdwy]?", word):
            continue
        names.add(word)
    return names


def _check_names(names: set[str], where: str) -> list[str]:
    problems = []
    sdk = sdk_names()
    for name in sorted(names):
        if name.startswith("gateway_agent_"):
            if name not in agent_names():
                problems.append(f"{where}: {name} is not exported by agent/metrics.py")
        elif name.startswith("temporal_"):
            if sdk is not None and name not in sdk:
                problems.append(f"{where}: {name} is not a Temporal SDK metric")
        else:
            problems.append(f"{where}: {name} is neither the agent's nor the Temporal SDK's")
    return problems


def test_the_structural_checks_catch_mistakes():
    assert not promql_problems('sum by (le) (rate(x_bucket{a="b"}[5m]))')
    assert promql_problems("sum(rate(x_total[5m])")
    assert promql_problems('sum(rate(x_total{a=b}[5m]))')
    assert promql_problems("histogram_quantile(0.95, sum(rate(x_bucket[5m])))")
    assert promql_problems("rate(gateway_agent_listener_connected[5m])")
    assert metric_names('sum by (outcome) (rate(a_total{x="y"}[5m])) / b unless on(ns) c') == {"a_total", "b", "c"}
    assert _check_names({"gateway_agent_nope_total", "temporal_nope", "up"}, "x") != []


# ---------------------------------------------------------------------- the files


@pytest.fixture(scope="module")
def docs() -> list[dict[str, Any]]:
    return render(MONITORING)


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def _targets(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p.get("targets", [])]


def _rules(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for g in one(docs, "PrometheusRule")["spec"]["groups"] for r in g["rules"]]


def test_the_monitoring_kustomization_renders_its_three_objects(docs, dashboard):
    assert sorted(d["kind"] for d in docs) == ["ConfigMap", "PrometheusRule", "ServiceMonitor"]
    configmap = one(docs, "ConfigMap")
    kubernetes_validate.validate(configmap, "1.30", strict=True)
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(configmap["data"][DASHBOARD.name]) == dashboard
    for doc in docs:
        assert doc["metadata"]["namespace"] == "gateway-agent"
        assert doc["metadata"]["labels"]["app.kubernetes.io/name"] == "gateway-agent"
    # Monitoring needs the Prometheus Operator's CRDs: it stays out of the base kustomization.
    base = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    assert not [r for r in base["resources"] if "monitoring" in r]


def test_the_service_monitor_scrapes_the_metrics_service(docs):
    monitor = one(docs, "ServiceMonitor")
    (service,) = of_kind(render(DEPLOY), "Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [service["metadata"]["namespace"]]}
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == [p["name"] for p in service["spec"]["ports"]]
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"


def test_the_rules_have_the_shape_prometheus_takes(docs):
    rule = one(docs, "PrometheusRule")
    jsonschema.validate(rule, RULE_SCHEMA)
    names = [r["alert"] for r in _rules(docs)]
    assert len(names) == len(set(names)), "alert names repeat"
    groups = [g["name"] for g in rule["spec"]["groups"]]
    assert len(groups) == len(set(groups))


def test_every_expression_is_well_formed_and_uses_real_metrics(docs, dashboard):
    problems = []
    expressions = [(f"panel {t}", e) for t, e in _targets(dashboard)]
    expressions += [(f"alert {r['alert']}", r["expr"]) for r in _rules(docs)]
    for where, expr in expressions:
        problems += [f"{where}: {p}" for p in promql_problems(expr)]
        names = metric_names(expr)
        if not names:
            problems.append(f"{where}: no metric")
        problems += _check_names(names, where)
    templating = [v["definition"] for v in dashboard["templating"]["list"] if v.get("definition")]
    for definition in templating:
        problems += _check_names(set(re.findall(r"label_values\((\w+)", definition)), "templating")
    assert not problems, "\n".join(problems)


def test_the_dashboard_is_a_grafana_dashboard(dashboard):
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert {"datasource", "namespace"} <= {v["name"] for v in dashboard["templating"]["list"]}
    for panel in dashboard["panels"]:
        assert set(panel["gridPos"]) == {"x", "y", "w", "h"} and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${datasource}", "no data source baked in"
            assert 'namespace=~"$namespace"' in target["expr"], f"{panel['title']}: not filtered by namespace"


def test_the_dashboard_shows_what_an_operator_asks_first(dashboard):
    exprs = " ".join(e for _, e in _targets(dashboard))
    for needed in (
        "gateway_agent_events_total",
        "gateway_agent_deployments_total",
        "gateway_agent_compensations_total",
        "gateway_agent_drift_corrections_total",
        "gateway_agent_listener_connected",
        "temporal_workflow_task_schedule_to_start_latency_seconds_bucket",
        "temporal_activity_schedule_to_start_latency_seconds_bucket",
    ):
        assert needed in exprs, needed
    quantiles = {
        re.match(r"histogram_quantile\((0\.\d+),", e).group(1)  # type: ignore[union-attr]
        for _, e in _targets(dashboard)
        if "gateway_agent_event_to_accepted_seconds_bucket" in e
    }
    assert {"0.5", "0.95"} <= quantiles
    assert re.search(r"sum by \([^)]*outcome[^)]*\) \(rate\(gateway_agent_deployments_total", exprs)
    assert re.search(r"sum by \([^)]*reason[^)]*\) \(rate\(gateway_agent_deployments_total", exprs)


@pytest.mark.parametrize(
    ("topic", "pattern"),
    [
        ("listener disconnected", r"gateway_agent_listener_connected"),
        ("deployments stuck", r"gateway_agent_workflow_events_total.*unless.*gateway_agent_deployments_total"),
        ("tasks waiting for workers", r"temporal_workflow_task_schedule_to_start_latency_seconds_bucket"),
        ("deployments failing", r'gateway_agent_deployments_total\{outcome="failed"\}'),
        ("dead letters rising", r'gateway_agent_events_total\{outcome="dead-lettered"\}'),
        ("full sync aborted", r'temporal_workflow_failed_total\{workflow_type="FullSync"\}'),
        ("rollback failed", r'gateway_agent_compensations_total\{outcome="failed"\}'),
    ],
)
def test_an_alert_covers(docs, topic, pattern):
    assert [r["alert"] for r in _rules(docs) if re.search(pattern, " ".join(r["expr"].split()))], topic


def test_the_full_sync_workflow_is_the_one_alerted_on():
    """The alert filters on the workflow type the SDK labels failures with: FullSync's registered name."""
    from workflows.full_sync import FullSync

    assert getattr(FullSync, "__temporal_workflow_definition").name == "FullSync"
    assert (REPO / "deploy" / "monitoring" / "prometheusrule.yaml").read_text().count('workflow_type="FullSync"') == 1
