"""deploy/grafana/gpu-server.json: valid JSON a Grafana can import, with the panels the issue asks for.

That every query names metrics the node exports, and that Prometheus accepts every query,
is checked against a real node and a real Prometheus in tests/integration/test_observability.py.
"""

from __future__ import annotations

import json
import re

from tests.support.node import REPO

DASHBOARD = REPO / "deploy" / "grafana" / "gpu-server.json"
METRIC = re.compile(r"\b(?:gpu_server|process)_[a-z_]+\b")


def load() -> dict:
    return json.loads(DASHBOARD.read_text())


def panels(dashboard: dict) -> list[dict]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def exprs(dashboard: dict) -> list[str]:
    return [t["expr"] for p in panels(dashboard) for t in p["targets"]]


def metric_names(expr: str) -> set[str]:
    return set(METRIC.findall(expr))


def test_it_parses_and_every_panel_has_a_query():
    dashboard = load()
    assert dashboard["uid"] == "gpu-server"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels(dashboard):
        assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"]), panel["title"]
        # The data source is a variable, so the dashboard imports into any Grafana.
        assert panel["datasource"]["uid"] == "${datasource}"


def test_panels_the_issue_asks_for():
    queries = "\n".join(exprs(load()))
    assert "sum by (outcome) (rate(gpu_server_jobs_total" in queries
    assert "histogram_quantile(0.95, sum by (le) (rate(gpu_server_job_total_seconds_bucket" in queries
    for name in ("gpu_server_busy", "gpu_server_queue_length", "gpu_server_worker_restarts_total",
                 "gpu_server_worker_overlap_total",
                 "gpu_server_gpu_utilization_ratio", "gpu_server_gpu_memory_used_bytes"):
        assert name in queries, name
    # Job events (events.url) by type and result: sent, failed, dropped.
    assert "sum by (type, result) (rate(gpu_server_events_total" in queries


def test_queries_are_per_node():
    # Every query follows the Node picker (instance variable).
    for expr in exprs(load()):
        assert 'instance=~"$instance"' in expr, expr


def test_panels_do_not_overlap():
    # A panel added to a row pushes the rows below it down.
    taken: set[tuple[int, int]] = set()
    for panel in load()["panels"]:
        pos = panel["gridPos"]
        cells = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not cells & taken, panel["title"]
        taken |= cells
