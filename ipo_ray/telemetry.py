"""Ray metrics (``ray.util.metrics``) for dashboards: visible in the Ray dashboard and Prometheus.

Every name is prefixed ``ipo_ray_``; the tag ``role`` says which part emitted it (generator,
critic, trainer, store). Outside a Ray worker (plain unit tests) metrics are no-ops.

Ray's metrics agent exports them to Prometheus (``ray start --metrics-export-port``) with a ``ray_``
prefix and Ray's own labels (``WorkerId`` tells actors apart, ``NodeAddress``, ``SessionName``):
a counter ``x`` becomes ``ray_ipo_ray_x_total``, a gauge ``ray_ipo_ray_x``, a histogram
``ray_ipo_ray_x_bucket`` / ``_sum`` / ``_count`` (``prometheus_names``; checked against a live
export by tests/test_cluster.py). A gauge disappears from the export when its process exits.
"""

from __future__ import annotations

from functools import lru_cache

import ray

COUNTERS = {
    "videos_generated": "Videos generated",
    "judgements": "Critic judgements made",
    "rows_made": "Training rows made by the critic stage",
    "samples_trained": "Training rows consumed by the trainer (all ranks)",
    "rows_dropped_stale": "Rows dropped for exceeding max_staleness",
    "unparsable_judgements": "Critic answers that could not be parsed",
    "invalid_judgements": "Videos the critic gave no usable verdict (dropped from training)",
    "groups_no_contrast": "Prompt groups that made no training row (no score gap)",
    "rows_skipped_resume": "Rows not trained again after a resume (already consumed)",
    "syncs": "Weight syncs published",
    "trainer_idle_seconds": "Seconds the trainer (rank 0) waited for data",
    "credit_wait_seconds": "Seconds generators waited at the staleness credit gate",
}
GAUGES = {
    "videos_per_second": "Videos/s of the last generator batch",
    "judgements_per_second": "Judgements/s of the last critic batch",
    "trainer_samples_per_second": "Trainer rows/s (all ranks) over the last step",
    "trainer_idle_fraction": "Fraction of trainer wall time spent waiting for data",
    "policy_version": "Policy version held",
    "acceptance_rate": "Fraction of judged videos scored >= 0.8",
    "outstanding_rows": "Rows produced or in flight but not yet consumed (queue depth)",
    "inflight_groups": "Prompt groups admitted to generation but not yet judged",
    "staleness": "Mean staleness of the rows in the last step",
    "sync_bytes": "Bytes shipped by the last weight sync",
}
HISTOGRAMS = {
    "generate_seconds": ("Seconds per generator batch", [0.1, 0.5, 1, 2, 5, 10, 30, 60, 120]),
    "judge_seconds": ("Seconds per critic batch", [0.01, 0.05, 0.1, 0.5, 1, 5, 30]),
    "step_seconds": ("Seconds per optimizer step", [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10]),
    "sync_seconds": ("Seconds per weight publish", [0.001, 0.01, 0.05, 0.1, 0.5, 1, 5]),
    "sync_load_seconds": ("Seconds for a rollout actor to load a new version", [0.001, 0.01, 0.05, 0.1, 0.5, 1, 5]),
    # Staleness is an integer number of versions; Ray wants positive boundaries, so le=0.5 counts 0.
    "row_staleness": ("Policy versions between a row's generator and the trainer", [0.5, 1.5, 2.5, 3.5, 5, 9, 17]),
}


def prometheus_names() -> dict[str, str]:
    """Every series name Ray's Prometheus export uses for these metrics -> the metric it belongs to."""
    out = {f"ray_ipo_ray_{k}_total": k for k in COUNTERS} | {f"ray_ipo_ray_{k}": k for k in GAUGES}
    for k in HISTOGRAMS:
        out.update({f"ray_ipo_ray_{k}_{suffix}": k for suffix in ("bucket", "sum", "count")})
    return out


class _Metrics:
    def __init__(self, role: str):
        from ray.util import metrics as m

        self.role = role
        self._c = {k: m.Counter(f"ipo_ray_{k}", description=d, tag_keys=("role",)) for k, d in COUNTERS.items()}
        self._g = {k: m.Gauge(f"ipo_ray_{k}", description=d, tag_keys=("role",)) for k, d in GAUGES.items()}
        self._h = {k: m.Histogram(f"ipo_ray_{k}", description=d, boundaries=b, tag_keys=("role",))
                   for k, (d, b) in HISTOGRAMS.items()}

    def count(self, name: str, value: float = 1.0) -> None:
        if value > 0:
            self._c[name].inc(value, tags={"role": self.role})

    def gauge(self, name: str, value: float) -> None:
        self._g[name].set(float(value), tags={"role": self.role})

    def observe(self, name: str, value: float) -> None:
        self._h[name].observe(float(value), tags={"role": self.role})


class _Null:
    def count(self, *a, **k):
        pass

    gauge = observe = count


@lru_cache(maxsize=None)
def actor_metrics(role: str):
    return _Metrics(role) if ray.is_initialized() else _Null()
