"""``CriticActor``: judges each group of K videos, writes the videos, and makes training rows.

A Ray Data ``map_batches`` class over an actor pool. Input: the generator's sample rows (whole
groups per batch). Output: training rows (ipo_ray.rows schema) with full provenance. Every judged
sample is also recorded in ``RUN_DIR/samples/round_XXX/part-*.parquet`` (scores, labels, critic text,
frames path) so the run can be audited even for samples that made no row.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray
import torch

from ipo_ray.config import Config
from ipo_ray.critic import make_critic
from ipo_ray.rows import rows_for, rows_table
from ipo_ray.telemetry import actor_metrics
from ipo_ray.world import ACCEPT


def judge_samples(critic, samples: list[dict], group_size: int | None = None) -> dict[str, list[dict]]:
    """Judge each group (samples sharing ``group_id``) in place: score, label, critic text, validity and the
    pairwise critic's ``pair_role``. Returns the groups. ``group_size``: the K every group must have
    (a ranked fragment of a group would make wrong pairs, so a split group is an error, not a guess)."""
    groups: dict[str, list[dict]] = {}
    for s in samples:
        groups.setdefault(s["group_id"], []).append(s)
    for gid, g in groups.items():
        if group_size is not None and len(g) != group_size:
            raise RuntimeError(f"critic batch holds {len(g)} of the {group_size} samples of group {gid!r} "
                               "(sampling.num_per_prompt): the rollout stream split a group across blocks")
        for s, j in zip(g, critic.judge_group(g[0]["prompt"], [s["frames"] for s in g])):
            s.update(score=float(j.score), label=j.label, critic_text=j.text, valid=j.valid,
                     pair_role=getattr(j, "role", ""))
    return groups


class CriticActor:
    def __init__(self, cfg: dict, run_dir: str, store_name: str, skip_row_ids: list[str] | None = None,
                 threads: int = 1):
        torch.set_num_threads(max(1, threads))
        self.cfg = Config.model_validate(cfg)
        self.run_dir = Path(run_dir)
        self.critic = make_critic(self.cfg.critic)
        self.store = ray.get_actor(store_name)
        self.skip = set(skip_row_ids or [])
        self.metrics = actor_metrics("critic")
        self._unparsable_seen = 0

    def __call__(self, batch: dict):
        t0 = time.time()
        samples = []
        for i in range(len(batch["sample_id"])):
            frames = np.frombuffer(batch["frames"][i], np.uint8).reshape(list(batch["frame_shape"][i]))
            samples.append({k: batch[k][i] for k in ("sample_id", "group_id", "prompt", "round", "seed",
                                                      "policy_version", "latents", "latent_shape", "latent_dtype")}
                           | {"frames": frames, "generate_seconds": float(batch["generate_seconds"][i])})
        groups = judge_samples(self.critic, samples, self.cfg.sampling.num_per_prompt)
        self._write_samples(samples)
        dt = time.time() - t0
        rows, counts = rows_for(samples, self.cfg.algo, self.critic.name)
        if self.skip:  # resume: rows already trained before the restart are not trained again
            kept = [r for r in rows if r["row_id"] not in self.skip]
            counts["rows_skipped_resume"] += len(rows) - len(kept)
            rows = kept
        ray.get(self.store.report_rows.remote(len(groups), len(rows)))
        scores = np.array([s["score"] for s in samples])
        self.metrics.count("judgements", len(samples))
        self.metrics.count("rows_made", len(rows))
        unparsable = int(self.critic.stats.get("unparsable", 0))
        self.metrics.count("unparsable_judgements", unparsable - self._unparsable_seen)
        self._unparsable_seen = unparsable
        for key in ("invalid_judgements", "groups_no_contrast", "rows_skipped_resume"):
            self.metrics.count(key, int(counts.get(key, 0)))
        self.metrics.observe("judge_seconds", dt)
        self.metrics.gauge("judgements_per_second", len(samples) / max(dt, 1e-9))
        self.metrics.gauge("acceptance_rate", float((scores >= ACCEPT).mean()) if scores.size else 0.0)
        return rows_table(rows)

    def _write_samples(self, samples: list[dict]) -> None:
        from ipo_ray.video import save_sample

        by_round: dict[int, list[dict]] = {}
        for s in samples:  # a semi-online batch can straddle a round boundary
            by_round.setdefault(int(s["round"]), []).append(s)
        for r, part in by_round.items():
            vdir = self.run_dir / "videos" / f"round_{r:03d}"
            for s in part:
                s["frames_path"], s["video_path"] = save_sample(s["frames"], vdir / s["sample_id"])
            table = pa.table({k: [s[k] for s in part] for k in (
                "sample_id", "group_id", "prompt", "round", "seed", "policy_version", "score", "label", "critic_text",
                "valid", "pair_role", "frames_path", "video_path", "generate_seconds")}
                             | {"critic": [self.critic.name] * len(part)})
            out = self.run_dir / "samples" / f"round_{r:03d}"
            out.mkdir(parents=True, exist_ok=True)
            # Named by its samples: a retried or resumed batch overwrites its record instead of adding a copy;
            # written beside and renamed, so a reader never sees half a file.
            name = hashlib.sha256("|".join(sorted(s["sample_id"] for s in part)).encode()).hexdigest()[:16]
            tmp = out / f".part-{name}.{uuid.uuid4().hex[:8]}.tmp"
            pq.write_table(table, tmp)
            os.replace(tmp, out / f"part-{name}.parquet")
