"""``GeneratorActor``: holds a policy, generates K videos per prompt with distinct seeds.

Used as a Ray Data ``map_batches`` class over an actor pool. Before each batch it acquires
generation credits from the weight store (semi-online flow control) and loads the newest
``policy_version`` if there is one, so every sample is stamped with the exact weights that made it.
Input batch: ``group_id, prompt, prompt_index, round, repeat`` (one row per group; ``jobs.loop.round_items``).
Output: one row per sample with its latents (raw bytes), frames path and provenance.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import ray
import torch

from ipo_ray.config import Config
from ipo_ray.policy import seeds_for
from ipo_ray.run_dir import load_base_policy
from ipo_ray.telemetry import actor_metrics
from ipo_ray.weight_sync import ObjectStoreTransport


class GeneratorActor:
    def __init__(self, cfg: dict, run_dir: str, store_name: str, threads: int = 1):
        torch.set_num_threads(max(1, threads))
        self.cfg = Config.model_validate(cfg)
        self.run_dir = Path(run_dir)
        device = "cuda" if torch.cuda.is_available() and self.cfg.loop.generator_gpus > 0 else "cpu"
        self.policy = load_base_policy(self.cfg, sampling=True)
        if self.cfg.model.finetune == "lora":  # syncs ship adapters only: hold the same adapter slots
            self.policy.setup_finetune()
        self.policy = self.policy.to(device)
        self.transport = ObjectStoreTransport(store_name)
        self.store = self.transport.store
        self.version = 0
        self._catch_up_from_disk()
        self.metrics = actor_metrics("generator")

    def _catch_up_from_disk(self) -> None:
        """On resume the store starts at the run's latest version; load it from the run dir."""
        from ipo_ray.run_dir import RunDir

        want = ray.get(self.store.get_version.remote())
        if want > 0:
            self.policy.load_policy_state(RunDir(self.run_dir).version_state(want))
            self.version = want

    def _sync(self) -> None:
        t0 = time.time()
        version, state, meta = self.transport.pull_if_newer(self.version)
        if state is not None:
            self.policy.load_policy_state(state)
            self.version = version
            self.metrics.observe("sync_load_seconds", time.time() - t0)

    def __call__(self, batch: dict) -> dict:
        n = len(batch["prompt"])
        ray.get(self.store.acquire.remote(n))
        try:
            return self._generate(batch)
        except BaseException:
            # The critic never sees these groups: hand their credits back, or a retried batch leaks them
            # and the staleness gate can stall.
            self.store.release.remote(n)
            raise

    def _generate(self, batch: dict) -> dict:
        self._sync()
        k, s = self.cfg.sampling.num_per_prompt, self.cfg.sampling
        jobs = []
        for g, p, pi, r, j in zip(batch["group_id"], batch["prompt"], batch["prompt_index"], batch["round"], batch["repeat"]):
            for seed in seeds_for(int(pi), k, self.cfg.seed, int(r), int(j)):
                jobs.append((str(g), str(p), int(pi), int(r), seed))
        t0 = time.time()
        out: dict[str, list] = {c: [] for c in ("sample_id", "group_id", "prompt", "round", "seed", "policy_version",
                                                 "latents", "latent_shape", "latent_dtype", "frames", "frame_shape")}
        for i in range(0, len(jobs), s.batch_size):
            chunk = jobs[i:i + s.batch_size]
            frames, latents = self.policy.sample([j[1] for j in chunk], [j[4] for j in chunk], s.steps,
                                                 s.guidance_scale)
            lat = latents.cpu().numpy().astype(np.float32)
            for (g, p, pi, r, seed), fr, la in zip(chunk, frames, lat):
                out["sample_id"].append(f"r{r:03d}-p{pi:05d}-s{seed}")
                out["group_id"].append(g)
                out["prompt"].append(p)
                out["round"].append(r)
                out["seed"].append(seed)
                out["policy_version"].append(self.version)
                out["latents"].append(la.tobytes())
                out["latent_shape"].append(list(la.shape))
                out["latent_dtype"].append("float32")
                out["frames"].append(np.ascontiguousarray(fr).tobytes())
                out["frame_shape"].append(list(fr.shape))
        dt = time.time() - t0
        out["generate_seconds"] = [dt / max(1, len(jobs))] * len(jobs)  # each video's share of its batch
        self.metrics.count("videos_generated", len(jobs))
        self.metrics.observe("generate_seconds", dt)
        self.metrics.gauge("videos_per_second", len(jobs) / max(dt, 1e-9))
        self.metrics.gauge("policy_version", self.version)
        return {key: np.array(v, dtype=object) if key in ("latents", "frames", "latent_shape", "frame_shape")
                else np.array(v) for key, v in out.items()}
