"""Writes ``ipo_ray_dashboard.json``: a Grafana dashboard for the metrics of ``ipo_ray/telemetry.py``.

    python cluster/grafana/make_dashboard.py        # regenerate after changing telemetry.py

Queries use the names Ray's Prometheus export gives them (``ray_`` prefix; counters end ``_total``;
histograms ``_bucket``/``_sum``/``_count``) and Ray's labels: ``WorkerId`` (one series per actor),
``SessionName`` (one Ray cluster session), ``role`` (our tag). tests/test_cluster.py checks that every
metric queried here is one telemetry.py defines, and that the JSON is what this script writes.
"""

from __future__ import annotations

import json
from pathlib import Path

OUT = Path(__file__).with_name("ipo_ray_dashboard.json")
DS = {"type": "prometheus", "uid": "${datasource}"}
SEL = 'SessionName=~"$SessionName"'
RATE = "$__rate_interval"


def q(expr: str, legend: str) -> dict:
    return {"expr": expr, "legendFormat": legend}


def rate(name: str, by: str = "WorkerId") -> str:
    return f"sum by ({by}) (rate(ray_ipo_ray_{name}_total{{{SEL}}}[{RATE}]))"


def gauge(name: str, by: str = "WorkerId") -> str:
    return f"max by ({by}) (ray_ipo_ray_{name}{{{SEL}}})"


def quantile(name: str, p: float) -> str:
    return f"histogram_quantile({p}, sum by (le) (rate(ray_ipo_ray_{name}_bucket{{{SEL}}}[{RATE}])))"


def mean(name: str) -> str:
    return (f"sum(rate(ray_ipo_ray_{name}_sum{{{SEL}}}[{RATE}])) / "
            f"sum(rate(ray_ipo_ray_{name}_count{{{SEL}}}[{RATE}]))")


# (title, unit, description, [targets]) per panel; a str entry starts a new row.
# Ray 2.60 exports a histogram's _sum from bucket midpoints, so "mean" is a bucket-resolution estimate.
LAYOUT = [
    "Throughput",
    ("Videos generated / s per generator actor", "none",
     "rate of ipo_ray_videos_generated; one series per actor (WorkerId)",
     [q(rate("videos_generated"), "{{WorkerId}}"), q(f"sum({rate('videos_generated')})", "all generators")]),
    ("Critic judgements / s per critic actor", "none", "rate of ipo_ray_judgements; one series per actor",
     [q(rate("judgements"), "{{WorkerId}}"), q(f"sum({rate('judgements')})", "all critics")]),
    ("Trainer samples / s", "none", "rows consumed by all ranks per second (rate) and over the last step (gauge)",
     [q(f"sum({rate('samples_trained')})", "rate"), q(gauge("trainer_samples_per_second", "role"), "last step")]),
    ("Rows made / s (critic stage)", "none", "training rows (pairs or singles) the critic stage emits",
     [q(f"sum({rate('rows_made')})", "rows/s"), q(f"sum({rate('rows_dropped_stale')})", "dropped stale/s")]),
    ("Last batch videos / s and judgements / s", "none", "per-batch gauges of each actor (gone when it exits)",
     [q(gauge("videos_per_second"), "gen {{WorkerId}}"), q(gauge("judgements_per_second"), "critic {{WorkerId}}")]),
    "Trainer",
    ("Optimizer step time", "s", "seconds per optimizer step (histogram)",
     [q(quantile("step_seconds", 0.5), "p50"), q(quantile("step_seconds", 0.95), "p95"),
      q(mean("step_seconds"), "mean (bucket midpoints)")]),
    ("Trainer idle", "percentunit", "fraction of trainer wall time waiting for data; idle seconds per second",
     [q(gauge("trainer_idle_fraction", "role"), "idle fraction"),
      q(f"sum({rate('trainer_idle_seconds')})", "idle s/s")]),
    ("Batch latency: generate and judge", "s", "seconds per generator batch and per critic batch",
     [q(quantile("generate_seconds", 0.95), "generate p95"), q(mean("generate_seconds"), "generate mean"),
      q(quantile("judge_seconds", 0.95), "judge p95"), q(mean("judge_seconds"), "judge mean")]),
    "Weight sync",
    ("Sync seconds (publish) and load seconds (rollout actors)", "s", "trainer publish and actor load times",
     [q(quantile("sync_seconds", 0.5), "publish p50"), q(quantile("sync_seconds", 0.95), "publish p95"),
      q(quantile("sync_load_seconds", 0.95), "load p95")]),
    ("Sync bytes", "bytes", "bytes shipped by the last weight sync",
     [q(gauge("sync_bytes", "role"), "bytes")]),
    ("Syncs and policy version", "none", "weight syncs published; version held by the trainer and each actor",
     [q(f"sum(increase(ray_ipo_ray_syncs_total{{{SEL}}}[$__range]))", "syncs in range"),
      q(gauge("policy_version", "role, WorkerId"), "v {{role}} {{WorkerId}}")]),
    "Staleness and queues",
    ("Row staleness (policy versions)", "none",
     "rows consumed per staleness bucket in the range (le=0.5 is 0, le=1.5 is 1, ...) and the last step's mean",
     [q(f"sum by (le) (increase(ray_ipo_ray_row_staleness_bucket{{{SEL}}}[$__range]))", "le {{le}}"),
      q(gauge("staleness", "role"), "mean (last step)")]),
    ("Queue depth", "none", "rows made or in flight but not yet trained on; prompt groups in generation",
     [q(gauge("outstanding_rows", "role"), "outstanding rows"),
      q(gauge("inflight_groups", "role"), "groups in flight")]),
    ("Credit gate wait", "none", "seconds per second generators wait for staleness credits",
     [q(f"sum({rate('credit_wait_seconds')})", "wait s/s")]),
    "Quality",
    ("Acceptance rate (score >= 0.8)", "percentunit", "fraction of judged videos accepted in each critic batch",
     [q(gauge("acceptance_rate"), "{{WorkerId}}")]),
    ("Unparsable critic answers / s", "none", "VLM answers that could not be parsed",
     [q(f"sum({rate('unparsable_judgements')})", "unparsable/s")]),
    ("Samples that made no row / s", "none", "videos without a usable verdict, groups without a score gap, "
     "rows skipped as already trained (resume)",
     [q(f"sum({rate('invalid_judgements')})", "invalid videos/s"),
      q(f"sum({rate('groups_no_contrast')})", "groups without contrast/s"),
      q(f"sum({rate('rows_skipped_resume')})", "rows skipped (resume)/s")]),
]


def build() -> dict:
    panels, y, x, pid = [], 0, 0, 1
    for item in LAYOUT:
        if isinstance(item, str):
            if x:
                y, x = y + 8, 0
            panels.append({"id": pid, "type": "row", "title": item, "collapsed": False,
                           "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
            pid, y = pid + 1, y + 1
            continue
        title, unit, desc, targets = item
        panels.append({
            "id": pid, "type": "timeseries", "title": title, "description": desc, "datasource": DS,
            "gridPos": {"h": 8, "w": 12, "x": x, "y": y},
            "fieldConfig": {"defaults": {"unit": unit, "custom": {"lineWidth": 1, "fillOpacity": 10}}, "overrides": []},
            "options": {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}},
            "targets": [{"refId": chr(ord("A") + i), "datasource": DS, **t} for i, t in enumerate(targets)],
        })
        pid += 1
        x = 12 - x
        if x == 0:
            y += 8
    return {
        "uid": "ipo-ray-throughput", "title": "ipo-ray: IPO loop throughput", "tags": ["ipo-ray", "ray"],
        "schemaVersion": 39, "version": 1, "editable": True, "refresh": "10s", "graphTooltip": 1,
        "time": {"from": "now-1h", "to": "now"},
        "annotations": {"list": []},
        "templating": {"list": [
            {"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus",
             "current": {}, "hide": 0},
            {"name": "SessionName", "label": "Ray session", "type": "query", "datasource": DS,
             "query": {"query": "label_values(ray_ipo_ray_videos_generated_total, SessionName)", "refId": "S"},
             "definition": "label_values(ray_ipo_ray_videos_generated_total, SessionName)",
             "includeAll": True, "multi": True, "allValue": ".+", "current": {}, "refresh": 2, "hide": 0},
        ]},
        "panels": panels,
    }


def render() -> str:
    return json.dumps(build(), indent=2) + "\n"


if __name__ == "__main__":
    OUT.write_text(render())
    print(f"wrote {OUT}")
