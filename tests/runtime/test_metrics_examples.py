"""The example alert rules and Grafana dashboard under ``examples/`` parse, and every metric
they name is one a worker or an archiver exports (the declared lists, which
``test_metrics_worker`` and ``test_archiver_metrics`` hold to what a real one serves)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from runstate.retention.archiver_metrics import ARCHIVER_METRICS
from runstate.runtime.metrics import WORKER_METRICS

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "examples" / "prometheus" / "runstate-alerts.yaml"
DASHBOARD = ROOT / "examples" / "grafana" / "runstate-dashboard.json"
DOCS = ROOT / "docs" / "metrics.md"

_NAME = re.compile(r"\brunstate_[a-z0-9_]+")
#: Suffixes the text format adds to a family's name.
_SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "info": ("_info",),
    "gauge": ("",),
}


def _series_names() -> set[str]:
    """Every series name a worker or an archiver serves."""
    declared = {**WORKER_METRICS, **ARCHIVER_METRICS}
    return {name + suffix for name, kind in declared.items() for suffix in _SUFFIXES[kind]}


def _named(exprs: list[str]) -> set[str]:
    return {m for e in exprs for m in _NAME.findall(e)}


def test_alert_rules_parse_and_name_only_exported_metrics() -> None:
    rules = yaml.safe_load(ALERTS.read_text())
    alerts = [r for group in rules["groups"] for r in group["rules"]]
    assert {a["alert"] for a in alerts} >= {
        "RunstateConsumerLagGrowing",
        "RunstateArchiverBehind",
        "RunstateApprovalsOverdue",
    }
    for alert in alerts:
        assert set(alert) <= {"alert", "expr", "for", "labels", "annotations"}, alert
        assert alert["expr"].count("(") == alert["expr"].count(")"), alert["alert"]
        assert alert["labels"]["severity"] in {"info", "warning", "critical"}
    named = _named([a["expr"] for a in alerts])
    assert named, "no metric named"
    assert named <= _series_names(), named - _series_names()


def test_dashboard_queries_name_only_exported_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    named = _named(exprs)
    assert named <= _series_names(), named - _series_names()
    # every family has a place on the dashboard or in the alerts, or is a detail of one
    shown = named | _named([ALERTS.read_text()])
    families = set(WORKER_METRICS) | set(ARCHIVER_METRICS)
    unseen = {f for f in families if not any(s.startswith(f) for s in shown)}
    assert len(unseen) <= len(families) // 2, unseen


def test_the_metrics_reference_lists_every_metric() -> None:
    text = DOCS.read_text()
    for name, kind in {**WORKER_METRICS, **ARCHIVER_METRICS}.items():
        series = name if kind == "histogram" else name + _SUFFIXES[kind][0]
        assert f"`{series}`" in text, f"{series} missing from docs/metrics.md"
