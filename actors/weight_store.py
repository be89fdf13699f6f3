"""``WeightStore``: the versioned weight store and the generation-credit gate (DESIGN §1).

One named async actor per run. The trainer's rank 0 publishes each new ``policy_version`` (an
ObjectRef to the state dict, put in the object store once); generator actors ask for the latest
version before every batch and load it when it is newer.

Flow control: Ray Data backpressures by memory, not by policy version, so left alone the
generators would run the whole prompt stream ahead of the first sync. Before each batch a generator
``acquire``s credits: it may start only while the rows already produced but not yet consumed,
plus the rows expected from batches in flight, stay within ``window_rows`` (= ``max_staleness``
sync windows of rows). A row made with version v is then consumed before the trainer publishes
version v + max_staleness + 1. If nothing is in flight a batch is always admitted, so the gate can
never deadlock the trainer. ``credit=False`` (rounds mode) admits everything.

Rounds mode: the trainer lives for the whole run; the driver hands each round's rows to it here
(``offer_round``: one Ray Data split per rank) once the round is generated and judged, and every rank
waits for its part in ``take_round``.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import ray

from ipo_ray.telemetry import actor_metrics


@ray.remote(num_cpus=0)
class WeightStore:
    def __init__(self, window_rows: int, rows_per_group: float, credit: bool = True, version: int = 0,
                 step_rows: int = 1):
        self.version = version
        self.state_ref = None
        self.meta: dict = {}
        self.window_rows = max(1, int(window_rows))
        self.rows_per_group = float(rows_per_group)
        self.credit = credit
        self.step_rows = max(1, int(step_rows))
        self.produced_rows = 0
        self.done_groups = 0
        self.consumed_rows = 0
        self.inflight_groups = 0
        self.trainer_version = version
        self.cond = asyncio.Condition()
        self.sync_log: list[dict] = []
        self.staleness = Counter()
        self.dropped_stale = 0
        self.waits = 0
        self.wait_seconds = 0.0
        self.finished = False
        self.rounds: dict[int, tuple[list | None, str | None]] = {}
        self.metrics = actor_metrics("store")

    def _gauges(self) -> None:
        """Queue depth for dashboards: rows made or in flight but not yet trained on."""
        outstanding, _ = self._outstanding()
        self.metrics.gauge("outstanding_rows", outstanding)
        self.metrics.gauge("inflight_groups", self.inflight_groups)

    # ---- weights
    async def publish(self, version: int, state_refs: list, meta: dict) -> None:
        """``state_refs`` is ``[ObjectRef]`` (wrapped in a list so Ray does not resolve it)."""
        async with self.cond:
            self.version, self.state_ref, self.meta = int(version), state_refs[0], dict(meta)
            self.trainer_version = int(version)
            self.sync_log.append({"version": int(version), "time": time.time(), **{k: meta[k] for k in
                                  ("bytes", "seconds") if k in meta}})
            self.cond.notify_all()

    async def latest(self) -> tuple[int, list, dict]:
        return self.version, [self.state_ref], self.meta

    async def get_version(self) -> int:
        return self.version

    # ---- credits
    def _outstanding(self) -> tuple[float, float]:
        """Rows made or in flight but not yet trained on, and the rows one group is expected to make."""
        est = self.rows_per_group if self.done_groups == 0 else self.produced_rows / self.done_groups
        return (self.produced_rows - self.consumed_rows) + self.inflight_groups * est, est

    async def acquire(self, n_groups: int) -> int:
        """Block until ``n_groups`` prompt groups may be generated; returns the version to use."""
        start = time.time()
        async with self.cond:
            waited = False
            while self.credit and not self.finished:
                outstanding, est = self._outstanding()
                queued = self.produced_rows - self.consumed_rows
                starving = self.inflight_groups == 0 and queued < self.step_rows
                if starving or outstanding + n_groups * est <= self.window_rows:
                    break
                waited = True
                await self.cond.wait()
            if waited:
                self.waits += 1
                self.wait_seconds += time.time() - start
                self.metrics.count("credit_wait_seconds", time.time() - start)
            self.inflight_groups += n_groups
            self._gauges()
            return self.version

    async def report_rows(self, n_groups: int, n_rows: int) -> None:
        """Critic stage: ``n_groups`` groups finished and made ``n_rows`` training rows."""
        async with self.cond:
            self.inflight_groups = max(0, self.inflight_groups - n_groups)
            self.done_groups += n_groups
            self.produced_rows += n_rows
            self._gauges()
            self.cond.notify_all()

    async def release(self, n_groups: int) -> None:
        """A generator batch failed after ``acquire``: its groups are no longer in flight."""
        async with self.cond:
            self.inflight_groups = max(0, self.inflight_groups - n_groups)
            self._gauges()
            self.cond.notify_all()

    async def report_consumed(self, total_rows: int, staleness: dict | None = None, dropped: int = 0) -> None:
        """Trainer rank 0: rows consumed so far (all ranks), the staleness counts of this step."""
        async with self.cond:
            self.consumed_rows = max(self.consumed_rows, int(total_rows))
            for k, v in (staleness or {}).items():
                self.staleness[int(k)] += int(v)
            self.dropped_stale += int(dropped)
            self._gauges()
            self.cond.notify_all()

    # ---- rounds: the driver hands each round's rows to the long-lived trainer
    async def offer_round(self, r: int, parts: list | None, error: str | None = None) -> None:
        """The rows of round ``r``, one dataset per trainer rank; or ``error``: the rollout failed, stop."""
        async with self.cond:
            self.rounds[int(r)] = (parts, error)
            for old in [k for k in self.rounds if k < int(r) - 1]:  # the trainer is past them
                del self.rounds[old]
            self.cond.notify_all()

    async def take_round(self, r: int, rank: int):
        """Trainer rank ``rank``: block until round ``r`` is offered; its part of the rows."""
        async with self.cond:
            await self.cond.wait_for(lambda: int(r) in self.rounds)
            parts, error = self.rounds[int(r)]
        if error is not None:
            raise RuntimeError(f"round {r}: the rollout failed, the trainer stops: {error}")
        return parts[rank]

    async def finish(self) -> None:
        async with self.cond:
            self.finished = True
            self.cond.notify_all()

    async def stats(self) -> dict:
        outstanding, est = self._outstanding()
        return {"version": self.version, "produced_rows": self.produced_rows, "consumed_rows": self.consumed_rows,
                "done_groups": self.done_groups, "inflight_groups": self.inflight_groups,
                "outstanding_rows": outstanding, "window_rows": self.window_rows,
                "staleness": dict(self.staleness), "dropped_stale": self.dropped_stale,
                "credit_waits": self.waits, "credit_wait_seconds": self.wait_seconds, "syncs": list(self.sync_log)}
