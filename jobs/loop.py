"""The IPO loop on Ray: generate → judge → make rows → train → sync, in rounds or semi-online.

    rounds:       for each round: rollout with the frozen policy → Parquet → train epochs → publish
                  (the reference moves every ``ref_update_every`` publishes; IPO: every round); one
                  trainer for all rounds, fed each round's rows by ``RoundFeeder``
    semi_online:  one stream: rollout → rows → trainer; rank 0 publishes every ``sync_every`` steps and
                  the weight store's credits keep rows within ``max_staleness`` versions

Both modes share the rollout pipeline (``rollout_dataset``) and the trainer (``ipo_ray.trainer``);
they differ in whether the round is materialised before training.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import ray
from ray.train import DataConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from actors.critic import CriticActor
from actors.generator import GeneratorActor
from actors.weight_store import WeightStore
from ipo_ray.config import Config
from ipo_ray.evaluate import read_prompts
from ipo_ray.focus import allocate_groups, focus_weights, read_history
from ipo_ray.local_ray import init_local_ray
from ipo_ray.report import best_fields, rollout_acceptance
from ipo_ray.round_data import read_round
from ipo_ray.run_dir import RunDir
from ipo_ray.trainer import FAULT_ENV, train_loop_per_worker
from ipo_ray.wandb_log import WandbLogger
from ipo_ray.weight_sync import STORE_NAME
from ipo_ray.world import render, splits


def init_ray(num_cpus: int | None = None) -> None:
    """Connect to the cluster of ``ray job submit`` (RAY_ADDRESS), else start a local one on loopback.

    The local cluster has its dashboard (127.0.0.1:8265 or the next free port; token auth when a token
    exists): actors, the Ray Data and Ray Train views and logs show there, and Ray Train's placement-group
    cleaner polls its state API (without one it logged a warning every second of training)."""
    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=True)
    else:
        init_local_ray(num_cpus=num_cpus or max(4, os.cpu_count() or 1), include_dashboard=True,
                       log_to_driver=True)


def round_items(prompts: list[str], cfg: Config, r: int,
                history: dict[str, tuple[int, int]] | None = None) -> list[dict]:
    """The prompt groups of round ``r`` (deterministic: same config and history, same groups). ``history``
    (prompt -> accepted, judged in its latest rollout; ``loop.focus_explore`` from round 1) shares the round's
    groups out by contrast (``ipo_ray.focus``); without it each of ``prompts_per_round`` prompts gets one group, at
    most one per prompt (a budget above the prompt count is capped, and ``Loop.run_all`` says so)."""
    rng = np.random.default_rng([cfg.seed, r, 17])
    if history:
        weights = focus_weights(prompts, history, cfg.loop.focus_explore)
        counts = allocate_groups(weights, cfg.loop.prompts_per_round, rng)
        groups = [(int(i), j) for i in rng.permutation(len(prompts)) for j in range(int(counts[i]))]
    else:
        n = min(cfg.loop.prompts_per_round, len(prompts))
        groups = [(int(i), 0) for i in rng.permutation(len(prompts))[:n]]
    return [{"group_id": f"r{r:03d}-p{i:05d}" + (f"-g{j}" if j else ""), "prompt": prompts[i], "prompt_index": i,
             "round": r, "repeat": j} for i, j in groups]


def real_dataset(cfg: Config, n: int = 256):
    """The 'real videos' for the NLL regulariser: rendered world videos, or a user Parquet with
    ``prompt``, ``frames`` (uint8 bytes) and ``frame_shape`` columns. Without progress bars: every rank
    cycles it for the whole run, and a bar per rank and pass only buries the loop's own lines."""
    ds = _real_dataset(cfg, n)
    if ds is not None:
        ds.context.enable_progress_bars = False
    return ds


def _real_dataset(cfg: Config, n: int):
    if not cfg.real_videos or cfg.train.real_batch_size == 0:
        return None
    if cfg.real_videos == "world:render":
        m = cfg.model
        rows = []
        for i, p in enumerate(splits()["train"] * (n // len(splits()["train"]) + 1)):
            if i >= n:
                break
            fr = render(p, 1_000_000 + i, m.frames, m.height, m.width)
            rows.append({"prompt": p, "frames": fr.tobytes(), "frame_shape": list(fr.shape)})
        return ray.data.from_items(rows).materialize()
    path = Path(cfg.real_videos)
    if not path.exists():
        raise FileNotFoundError(f"real_videos: {cfg.real_videos!r} not found")
    ds = ray.data.read_parquet(str(path))
    missing = {"prompt", "frames", "frame_shape"} - set(ds.schema().names)
    if missing:
        raise ValueError(f"real_videos: {cfg.real_videos!r} lacks columns {sorted(missing)}")
    return ds


def scaling_for(cfg: Config) -> ScalingConfig:
    """The train workers' resources: ``cpus_per_worker`` CPUs and, on GPU, ``gpus_per_worker`` GPUs (a fraction
    lets a worker share a card with generator actors: the generator is ~85% of a real-size run's GPU time)."""
    t = cfg.train
    return ScalingConfig(num_workers=t.num_workers, use_gpu=t.use_gpu,
                         resources_per_worker={"CPU": t.cpus_per_worker} | ({"GPU": t.gpus_per_worker} if t.use_gpu else {}))


def rows_per_group(cfg: Config) -> int:
    """The most training rows one prompt group makes: its DPO pairs, or one KTO/RWR/SFT row per video."""
    return cfg.algo.pairs_per_group if cfg.algo.name == "dpo" else cfg.sampling.num_per_prompt


def prompts_per_batch(cfg: Config) -> int:
    """Prompt groups per generator batch (whole groups: a batch of K samples each)."""
    return max(1, cfg.sampling.batch_size // cfg.sampling.num_per_prompt)


class RoundFeeder(threading.Thread):
    """Rounds mode, beside the long-lived trainer: round ``r`` is rolled out once the trainer has published
    the version that ends round ``r - 1`` (so every round samples one frozen policy), then offered to it."""

    def __init__(self, loop: "Loop", prompts: list[str], first: int, version: int, store):
        super().__init__(name="ipo-ray-rounds", daemon=True)
        self.loop, self.prompts, self.first, self.version, self.store = loop, prompts, first, version, store
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.info: dict[int, dict] = {}

    def wait_version(self, v: int) -> bool:
        while not self.stop.is_set():
            if ray.get(self.store.get_version.remote()) >= v:
                return True
            time.sleep(0.2)
        return False

    def round_done(self, r: int) -> None:
        """Round ``r`` is trained and published: its metrics line, log line and wandb round."""
        info = self.info.pop(r)
        version = self.version + (r - self.first) + 1
        seconds = time.time() - info["t0"]
        syncs = [x for x in ray.get(self.store.stats.remote())["syncs"] if x["version"] == version]
        self.loop.run.log_metrics({"event": "round", "round": r, "rows": info["rows"], "version": version,
                                   **({"generate_seconds": info["t_gen"]} if info["t_gen"] is not None else {}),
                                   "seconds": seconds, "syncs": syncs})
        self.loop.log(f"round {r}: {info['rows']} rows, policy v{version}, {seconds:.0f}s")
        self.loop.wandb.round_end(r)

    def run(self) -> None:
        r = self.first
        try:
            for r in range(self.first, self.loop.cfg.loop.rounds):
                if r > self.first:
                    if not self.wait_version(self.version + (r - self.first)):
                        return
                    self.round_done(r - 1)
                t0 = time.time()
                parts, n_rows, t_gen = self.loop.prepare_round(self.prompts, r)
                self.info[r] = {"t0": t0, "rows": n_rows, "t_gen": t_gen}
                ray.get(self.store.offer_round.remote(r, parts))
        except BaseException as e:  # noqa: BLE001 - handed to the main thread, and the trainer told to stop
            self.error = e
            try:
                ray.get(self.store.offer_round.remote(r, None, f"{type(e).__name__}: {e}"))
            except Exception:  # noqa: BLE001
                pass


class Loop:
    def __init__(self, cfg: Config, run_dir: str | None = None, resume: bool = False, log=print):
        # Ray Train workers do not run in the driver's working directory: make local paths absolute.
        if cfg.model.path and Path(cfg.model.path).exists():
            cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"path": str(Path(cfg.model.path).absolute())})})
        if cfg.real_videos and Path(cfg.real_videos).exists():
            cfg = cfg.model_copy(update={"real_videos": str(Path(cfg.real_videos).absolute())})
        self.cfg = cfg
        self.run = RunDir(Path(run_dir or cfg.run_dir).absolute())
        self.resume = resume
        self.log = log
        self.store_name = f"{STORE_NAME}_{abs(hash(str(self.run.path))) % 10**8}"
        self.wandb = WandbLogger(cfg, self.run.path, log=log)  # started by run_all; a no-op until then

    # ------------------------------------------------------------------ pieces
    def check_budget(self) -> None:
        c = self.cfg
        need = (c.loop.generator_actors * c.loop.generator_cpus + c.critic.num_actors * c.critic.num_cpus
                + c.train.num_workers * c.train.cpus_per_worker + 0.5)
        have = ray.cluster_resources().get("CPU", 0)
        if need > have:
            raise ValueError(f"loop.generator_cpus/critic.num_cpus/train.cpus_per_worker: the pipeline needs {need:g} "
                             f"logical CPUs but the cluster has {have:g}; lower them or add CPUs")

    def make_store(self, version: int, credit: bool):
        c = self.cfg
        per_group = float(rows_per_group(c))
        step_rows = c.train.batch_size * c.train.num_workers * c.train.grad_accum
        # rows one sync window consumes: sync_every optimizer steps, each a 1/updates_per_batch share of a batch
        window = max(1, int(max(1, c.loop.max_staleness) * c.loop.sync_every * step_rows / c.train.updates_per_batch))
        # Ray Train's streaming_split(equal=True) hands a block to one rank only while it holds enough
        # rows to even out the others, so about one critic block per rank waits in the splitter.
        # The gate must admit that much or the pipeline stalls (docs/ARCHITECTURE.md).
        block_rows = int(prompts_per_batch(c) * per_group)
        hold = (c.train.num_workers + 1) * block_rows
        if credit and hold > window:
            self.log(f"note: the split needs {hold} rows in flight but one staleness window is {window}; rows may "
                     "exceed max_staleness and be dropped (raise loop.sync_every or lower sampling.batch_size)")
        window = max(window, hold)
        try:
            ray.kill(ray.get_actor(self.store_name))
        except ValueError:
            pass
        # Keep the handle on self: a named actor with no live handle is garbage-collected.
        self.store = WeightStore.options(name=self.store_name).remote(window, per_group, credit, version,
                                                                       step_rows + hold)
        ray.get(self.store.get_version.remote())
        return self.store

    def rollout_dataset(self, items: list[dict], skip_row_ids: list[str] | None = None):
        c = self.cfg
        kw = {"cfg": c.model_dump(mode="json"), "run_dir": str(self.run.path), "store_name": self.store_name}
        per_batch = prompts_per_batch(c)
        # The critic ranks whole groups, one generator batch at a time (batch_size=None: one block). Ray Data
        # slices outputs above target_max_block_size (128 MiB; a few full-size videos), which would split a
        # group: this stream keeps each generator batch one block (the critic also checks every group is whole).
        ctx = ray.data.DataContext.get_current()
        saved, ctx.target_max_block_size = ctx.target_max_block_size, None
        try:
            ds = ray.data.from_items(items, override_num_blocks=max(1, len(items) // per_batch))
            ds = ds.map_batches(GeneratorActor, fn_constructor_kwargs={**kw, "threads": max(1, int(c.loop.generator_cpus))},
                                batch_size=per_batch, compute=ray.data.ActorPoolStrategy(size=c.loop.generator_actors),
                                num_cpus=c.loop.generator_cpus, num_gpus=c.loop.generator_gpus or None)
            ds = ds.map_batches(CriticActor, fn_constructor_kwargs={**kw, "skip_row_ids": skip_row_ids or []},
                                batch_size=None, compute=ray.data.ActorPoolStrategy(size=c.critic.num_actors),
                                num_cpus=c.critic.num_cpus, num_gpus=c.critic.num_gpus or None)
            # Run inside an actor (semi-online: Ray Train's split coordinator), Ray's tqdm bars reached the job log as
            # ~180 KB of cursor escapes a round; without it Ray Data logs progress every 10 s, as in the driver.
            ds.context.use_ray_tqdm = False
            return ds
        finally:
            ctx.target_max_block_size = saved

    def fit(self, name: str, train_ds, config: dict) -> None:
        """One TorchTrainer run. ``train_ds``: the semi-online stream; ``None`` in rounds mode, where the rounds'
        rows reach the workers through the weight store (``RoundFeeder``)."""
        c = self.cfg
        real = real_dataset(c)
        datasets = ({"train": train_ds} if train_ds is not None else {}) | ({"real": real} if real is not None else {})
        ckpt = self.latest_checkpoint()
        trainer = TorchTrainer(
            train_loop_per_worker,
            train_loop_config={"cfg": c.model_dump(mode="json"), "run_dir": str(self.run.path),
                               "has_real": real is not None, "store_name": self.store_name,
                               "optimizer_state": str(ckpt / "optimizer.pt") if ckpt else None,
                               # Resume drills in tests: the driver's env var reaches the workers.
                               "fault_after_step": int(os.environ.get(FAULT_ENV, "0") or 0), **config},
            scaling_config=scaling_for(c),
            datasets=datasets, dataset_config=DataConfig(datasets_to_split=["train"] if train_ds is not None else []),
            # A fresh name per attempt: a resumed run starts its own Ray Train run from our checkpoint.
            run_config=RunConfig(storage_path=str(self.run.path / "ray_train"), name=f"{name}-{int(time.time())}"))
        trainer.fit()

    def latest_checkpoint(self) -> Path | None:
        """The newest trainer checkpoint (by policy version) under RUN_DIR/ray_train."""
        best, best_v = None, -1
        for state in (self.run.path / "ray_train").glob("*/checkpoint_*/state.json"):
            v = json.loads(state.read_text())["version"]
            if v > best_v:
                best, best_v = state.parent, v
        return best

    def checkpoint_state(self) -> dict:
        ckpt = self.latest_checkpoint()
        if ckpt is None:
            return {"version": 0, "ref_version": 0, "step": 0, "round": -1, "consumed_rows": 0}
        return json.loads((ckpt / "state.json").read_text())

    def _discard_after(self, version: int) -> None:
        """Resume: versions and consumed windows written after the last checkpoint never happened."""
        for v in self.run.versions():
            if v > version:
                shutil.rmtree(self.run.version_dir(v))
        for tmp in (self.run.path / "policies").glob("v*.tmp"):  # a publish cut short
            shutil.rmtree(tmp)
        for w in (self.run.path / "data" / "consumed").glob("window_*"):
            if int(w.name.split("_")[1]) >= version:
                shutil.rmtree(w)

    # ------------------------------------------------------------------ modes
    def run_rounds(self, prompts: list[str], state: dict) -> None:
        """One trainer for all rounds (model loaded and worker group started once); a feeder thread rolls each
        round out with the frozen policy once the previous round is published, and hands its rows over."""
        c = self.cfg
        first = state["round"] + 1
        if first >= c.loop.rounds:
            return
        store = self.make_store(state["version"], credit=False)
        feeder = RoundFeeder(self, prompts, first, state["version"], store)
        feeder.start()
        try:
            self.fit("rounds", None, {"mode": "rounds", "round": first, "rounds_end": c.loop.rounds,
                                      "start_version": state["version"], "ref_version": self.ref_version(state["version"]),
                                      "start_step": state["step"], "consumed_rows": state["consumed_rows"]})
        except BaseException as e:
            feeder.stop.set()
            feeder.join()
            if feeder.error is not None:  # the rollout failed first: that is the error to show
                raise feeder.error from e
            raise
        feeder.join()
        if feeder.error is not None:
            raise feeder.error
        feeder.round_done(c.loop.rounds - 1)

    def round_data(self, r: int) -> Path:
        return self.run.path / "data" / f"round_{r:03d}"

    def rollout_round(self, prompts: list[str], r: int, allow_empty: bool = False) -> float | None:
        """Roll round ``r`` out with the store's policy version into ``data/round_r`` (unless it is already
        there: then None, else the seconds it took); every sample is also logged under ``samples/``."""
        t0 = time.time()
        data = self.round_data(r)
        if data.is_dir():  # resumed: the rollout ran before the restart
            return None
        tmp = data.with_name(data.name + ".tmp")  # a half-written round is regenerated from scratch
        shutil.rmtree(tmp, ignore_errors=True)
        self.rollout_dataset(round_items(prompts, self.cfg, r, self.focus_history(r))).write_parquet(str(tmp))
        if not any(tmp.glob("*.parquet")):  # no rows at all: Ray Data wrote nothing (the samples are logged)
            shutil.rmtree(tmp, ignore_errors=True)
            if not allow_empty:
                self.too_few_rows(r, 0)
            return time.time() - t0
        tmp.rename(data)
        return time.time() - t0

    def focus_history(self, r: int) -> dict[str, tuple[int, int]] | None:
        """``loop.focus_explore``: what the rounds before ``r`` rolled out, per prompt (None: no focus)."""
        c = self.cfg.loop
        if c.focus_explore is None or r == 0:
            return None
        return read_history(self.run.path / "samples", r, c.focus_threshold) or None

    def score_final(self, prompts: list[str]) -> None:
        """``loop.score_final``: the final policy rolls out the next round (judged, not trained), so it has
        rollout scores like every earlier version; a resumed run with more rounds trains on these rows."""
        v, r = self.run.latest_version(), self.cfg.loop.rounds
        self.make_store(v, credit=False)
        t = self.rollout_round(prompts, r, allow_empty=True)
        self.log(f"scored policy v{v}: round {r} rolled out and judged, not trained"
                 + (f" ({t:.0f}s)" if t is not None else " (already on disk)"))

    def prepare_round(self, prompts: list[str], r: int):
        """Roll round ``r`` out (unless its Parquet is already there) and split its rows over the trainer ranks."""
        c = self.cfg
        t_gen = self.rollout_round(prompts, r)
        # Read once into the object store; each rank gets an equal part and replays it epochs_per_round
        # times (a seeded block order per epoch, then its local shuffle buffer). A full random_shuffle (an
        # all-to-all exchange) cost more than the training on small rounds (docs/ARCHITECTURE.md, "Data path").
        # read_round sorts by row_id and cuts one block per file, so the blocks do not depend on timing.
        read = read_round(self.round_data(r))
        n_rows = read.count()  # from the materialised blocks' metadata
        if n_rows < c.train.num_workers * c.train.batch_size:
            self.too_few_rows(r, n_rows)
        return read.split(c.train.num_workers, equal=True), n_rows, t_gen

    def too_few_rows(self, r: int, n_rows: int) -> None:
        raise RuntimeError(f"round {r}: only {n_rows} training rows (need a batch per worker); "
                           "raise loop.prompts_per_round or sampling.num_per_prompt, or lower algo.min_score_gap")

    def ref_version(self, version: int) -> int:
        k = self.cfg.loop.ref_update_every
        return 0 if k == 0 else (version // k) * k

    def run_semi_online(self, prompts: list[str], state: dict) -> None:
        c = self.cfg
        consumed = self.consumed_row_ids(state["version"])
        items = [it for r in range(c.loop.rounds) for it in round_items(prompts, c, r)]
        if consumed:
            k = rows_per_group(c)  # a group with fewer rows is regenerated; its consumed rows are skipped
            per_group: dict[str, int] = {}
            for rid in consumed:
                g = rid.split("|")[0].rsplit("-s", 1)[0]
                per_group[g] = per_group.get(g, 0) + 1
            done_groups = {g for g, n in per_group.items() if n >= k}
            items = [it for it in items if it["group_id"] not in done_groups]
        store = self.make_store(state["version"], credit=True)
        self.fit("stream", self.rollout_dataset(items, sorted(consumed)),
                 {"mode": "semi_online", "round": -1, "start_version": state["version"],
                  "ref_version": self.ref_version(state["version"]), "start_step": state["step"],
                  "consumed_rows": state["consumed_rows"]})
        ray.get(store.finish.remote())
        stats = ray.get(store.stats.remote())
        self.run.log_metrics({"event": "stream_done", **{k: v for k, v in stats.items() if k != "syncs"}})
        for r in range(c.loop.rounds):
            self.wandb.round_end(r)

    def consumed_row_ids(self, version: int) -> set[str]:
        import pyarrow.parquet as pq

        ids: set[str] = set()
        for w in (self.run.path / "data" / "consumed").glob("window_*"):
            if int(w.name.split("_")[1]) < version:
                for f in w.glob("*.parquet"):
                    t = pq.read_table(f, columns=["row_id", "dropped_stale"]).to_pylist()
                    ids.update(r["row_id"] for r in t if not r["dropped_stale"])
        return ids

    # ------------------------------------------------------------------ entry
    def run_all(self) -> dict:
        c = self.cfg
        start = time.time()
        if self.run.path.exists() and (self.run.path / "config.yaml").exists() and not self.resume:
            if self.run.versions() or (self.run.path / "data").exists():
                raise FileExistsError(f"run dir {str(self.run.path)!r} already holds a run; pass --resume to "
                                      "continue it or choose another --run-dir")
        self.run.write_config(c)
        init_ray()
        self.check_budget()
        state = self.checkpoint_state()
        if self.resume:
            self._discard_after(state["version"])
            self.log(f"resuming {self.run.path} at policy v{state['version']} (step {state['step']})")
        prompts = read_prompts(c.prompts)
        if c.loop.prompts_per_round > len(prompts):
            self.log(f"note: loop.prompts_per_round={c.loop.prompts_per_round} but {c.prompts} holds {len(prompts)} "
                     f"prompts: one group per prompt, {len(prompts)} a round"
                     + (" until rollout focus shares the groups out (from round 1)" if c.loop.focus_explore is not None
                        else "; raise sampling.num_per_prompt for more rollouts"))
        self.wandb.start(resume=self.resume, stats_fn=self._store_stats)
        summary = None
        try:
            if c.loop.mode == "rounds":
                self.run_rounds(prompts, state)
                if c.loop.score_final:
                    self.score_final(prompts)
            else:
                self.run_semi_online(prompts, state)
            rollouts = rollout_acceptance(self.run.path, common_prompts=c.loop.focus_explore is not None)
            summary = {"run_dir": str(self.run.path), "mode": c.loop.mode, "seconds": time.time() - start,
                       "final_version": self.run.latest_version(), **self.accounting(),
                       **best_fields(rollouts, c.critic.protocol, self.run.latest_version()),
                       "rollouts": rollouts}
            (self.run.path / "summary.json").write_text(json.dumps(summary, indent=2))
        finally:
            self.wandb.finish(summary, failed=summary is None)
        return summary

    def _store_stats(self) -> dict:
        """The weight store's queue depth and credit counters for wandb (empty between stores)."""
        try:
            return ray.get(self.store.stats.remote(), timeout=10)
        except Exception:  # noqa: BLE001 - the store is replaced between rounds
            return {}

    def accounting(self) -> dict:
        recs = self.run.read_metrics()
        # A step logged by an attempt that crashed before its checkpoint is logged again after the resume:
        # count each step once, as its last attempt logged it.
        steps = list({r["step"]: r for r in recs if r.get("event") == "step"}.values())
        return {"optimizer_steps": len(steps), "rows_trained": int(sum(r["rows"] - r["dropped_stale"] for r in steps)),
                "rows_dropped_stale": int(sum(r["dropped_stale"] for r in steps))}
