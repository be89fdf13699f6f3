"""The Ray Train worker loop: preference loss + NLL regularisers, DDP or FSDP, weight publishing.

``train_loop_per_worker`` runs on every ``TorchTrainer`` worker, once for the whole run. It reads
training rows from its dataset shard (semi-online: a live Ray Data stream; rounds: each round's
materialised rows, split by the driver and handed over through the weight store once the round is
judged, then replayed ``epochs_per_round`` times), masks rows older than ``max_staleness`` versions
(counted, never trained on), computes the configured objective on per-sample errors that share ``t``
and noise between chosen and rejected, and publishes a new ``policy_version`` (rank 0) and a checkpoint
every ``sync_every`` optimizer steps (semi-online) or at the end of each round (rounds).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import ray
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist

from .config import Config
from .objective import PreferenceStep
from .parallel import full_model_state, is_sharded, load_optimizer_state, optimizer_state, wrap_model
from .policy import T2VPolicy
from .run_dir import RunDir, load_base_policy
from .telemetry import actor_metrics
from .weight_sync import STORE_NAME, ObjectStoreTransport

# Progress lines go through logging: Ray Train 2.60 patches ``print`` in its workers to log *and*, because Ray
# wraps the worker's stdout, to print as well, so every printed line reached the job log twice.
log = logging.getLogger(__name__)

FAULT_ENV = "IPO_RAY_FAULT_AFTER_STEP"  # tests: raise after this many optimizer steps (resume drills)
ROUND_END = object()  # in-band marker: the round's rows are all trained on, publish


def _gather_state(policy: T2VPolicy, model) -> dict[str, torch.Tensor]:
    """What a weight sync ships, on every rank (a collective under FSDP, local under DDP): the LoRA
    tensors when training LoRA, else every weight of the transformer."""
    if not is_sharded(model):
        return policy.policy_state()
    full = full_model_state(model)
    if policy.is_lora:
        from peft import get_peft_model_state_dict

        return get_peft_model_state_dict(policy.transformer, state_dict=full)
    return full


def _real_iter(shard, batch_size: int, seed: int, buffer: int | None):
    """Real-video batches without end, each pass over the clips in an order drawn from ``seed`` and the pass
    number, so what a rank sees depends on its seed only (a resumed round draws what the first try drew)."""
    n_pass = 0
    while True:
        got = False
        for b in shard.iter_batches(batch_size=batch_size, batch_format="numpy", drop_last=True,
                                    local_shuffle_buffer_size=buffer,
                                    local_shuffle_seed=None if buffer is None else seed + 7919 * n_pass):
            got = True
            frames = np.stack([np.frombuffer(f, np.uint8).reshape(list(s)) for f, s in zip(b["frames"], b["frame_shape"])])
            yield {"prompt": [str(p) for p in b["prompt"]], "frames": frames}
        if not got:
            return
        n_pass += 1


def _round_batches(store, rank: int, cfg: Config, first: int, end: int, cur: dict, reseed):
    """Rounds mode: each round's rows for this rank, ``epochs_per_round`` times over (a seeded block order per
    epoch, then the local shuffle buffer), then ``ROUND_END``. Waits (idle) while the driver rolls the round out."""
    tc = cfg.train
    for r in range(first, end):
        part = ray.get(store.take_round.remote(r, rank))
        part.context.enable_progress_bars = False  # a bar per rank and epoch: ~30k lines of noise in a default job
        cur["round"] = r
        reseed()
        buffer = None if tc.shuffle_buffer_rows == 0 else max(tc.shuffle_buffer_rows, tc.batch_size)
        for e in range(cfg.loop.epochs_per_round):
            yield from part.randomize_block_order(seed=cfg.seed + r + 7919 * e).iter_batches(
                batch_size=tc.batch_size, batch_format="numpy", prefetch_batches=1, local_shuffle_buffer_size=buffer,
                local_shuffle_seed=None if buffer is None else tc.seed + rank + 7919 * (r * 1000 + e))
        yield ROUND_END


def train_loop_per_worker(config: dict) -> None:
    cfg = Config.model_validate(config["cfg"])
    run = RunDir(config["run_dir"])
    tc, lc = cfg.train, cfg.loop
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(max(1, int(tc.cpus_per_worker)))
    # Same seed on every rank for the LoRA init (FSDP shards do not get rank 0's copy the way DDP's
    # broadcast gives it); per-rank seeds for the noise and timesteps after wrapping.
    torch.manual_seed(tc.seed + int(config["start_version"]))
    device = ray.train.torch.get_device() if tc.use_gpu else torch.device("cpu")
    semi = config["mode"] == "semi_online"
    version, ref_version = int(config["start_version"]), int(config["ref_version"])

    policy = load_base_policy(cfg).setup_finetune()  # the reference starts as the base
    if ref_version > 0:
        policy.load_policy_state(run.version_state(ref_version))
        policy.move_reference()
    if version > ref_version:
        policy.load_policy_state(run.version_state(version))
    policy.to(device).train_params_float32()  # bfloat16 models: float32 master weights, bf16 autocast
    model = wrap_model(policy.transformer, tc.strategy, world, find_unused=policy.is_lora,
                       compute_dtype=torch.bfloat16 if cfg.model.dtype == "bfloat16" else None)
    torch.manual_seed(tc.seed + 1000 * rank + int(config["start_version"]))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=tc.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, tc.warmup_steps))
                                              if tc.warmup_steps else 1.0)
    if config.get("optimizer_state") and Path(config["optimizer_state"]).is_file():
        saved = torch.load(config["optimizer_state"], map_location="cpu", weights_only=False)
        load_optimizer_state(model, opt, saved["optimizer"])
        sched.load_state_dict(saved["scheduler"])
    step_fn = PreferenceStep(policy, model, cfg, device)
    transport = ObjectStoreTransport(config.get("store_name", STORE_NAME)) if rank == 0 else None
    store = transport.store if transport else None
    metrics_sink = actor_metrics("trainer")

    real_shard = ray.train.get_dataset_shard("real") if config.get("has_real") and tc.real_batch_size > 0 else None
    real_buffer = None if tc.shuffle_buffer_rows == 0 else max(tc.shuffle_buffer_rows, tc.real_batch_size)

    def real_batches(r: int):  # every rank its own order (the ranks' real clips differ), a new one each round
        return _real_iter(real_shard, tc.real_batch_size, tc.seed + 1000 * rank + 7919 * r, real_buffer) \
            if real_shard is not None else None

    real_it = real_batches(0) if semi else None  # semi-online: one stream; rounds: set as each round starts
    max_stale = lc.max_staleness if semi else 10**9
    fault_after = int(config.get("fault_after_step") or os.environ.get(FAULT_ENV, "0") or 0)

    step = int(config.get("start_step", 0))
    micro, since_sync, consumed_total = 0, 0, int(config.get("consumed_rows", 0))
    pending_rows = pending_drop = 0  # rows of the batches in the current accumulation, not yet counted
    window_rows: list[dict] = []
    wait_s, busy_s, t_mark = 0.0, 0.0, time.time()
    wait_reported = 0.0
    acc_metrics: list[dict] = []
    stale_hist = np.zeros(max(lc.max_staleness, 0) + 3, np.int64)

    cur = {"round": int(config["round"])}

    def publish(reason: str) -> None:
        nonlocal version, ref_version, window_rows, since_sync
        state = _gather_state(policy, model)
        version += 1
        moved = lc.ref_update_every > 0 and version % lc.ref_update_every == 0
        info = {}
        if rank == 0:
            meta = {"lora": policy.is_lora, "round": cur["round"], "step": step, "reason": reason}
            run.publish(version, state, meta)
            info = transport.publish(version, state, meta)
            metrics_sink.count("syncs")
            metrics_sink.observe("sync_seconds", info["seconds"])
            metrics_sink.gauge("sync_bytes", info["bytes"])
            metrics_sink.gauge("policy_version", version)
        if semi and window_rows:
            _write_window(run, version - 1, rank, window_rows)
            window_rows = []
        if moved:
            policy.move_reference(None if policy.is_lora else state)  # full FT: ``state`` is every weight
            ref_version = version
        opt_state = optimizer_state(model, opt)  # a collective under FSDP: every rank calls it
        with tempfile.TemporaryDirectory() as d:
            ckpt = None
            if rank == 0:
                torch.save({"optimizer": opt_state, "scheduler": sched.state_dict()}, Path(d) / "optimizer.pt")
                (Path(d) / "state.json").write_text(json.dumps({
                    "version": version, "ref_version": ref_version, "step": step, "round": cur["round"],
                    "consumed_rows": consumed_total, "mode": config["mode"]}))
                ckpt = ray.train.Checkpoint.from_directory(d)
            ray.train.report({"version": version, "step": step, **info}, checkpoint=ckpt)
        since_sync = 0
        if rank == 0:
            run.log_metrics({"event": "sync", "version": version, "ref_version": ref_version, "step": step,
                             "round": cur["round"], "reference_moved": moved, **info})

    if semi:  # arrival order: a shuffle buffer would hold rows back and age them
        batches = ray.train.get_dataset_shard("train").iter_batches(batch_size=tc.batch_size, batch_format="numpy",
                                                                    prefetch_batches=1)
    else:  # the same seeds and real clips as a fresh worker starting at this round (resume gives the same run)
        def start_round() -> None:
            nonlocal real_it
            torch.manual_seed(tc.seed + 1000 * rank + version)
            real_it = real_batches(cur["round"])

        batches = _round_batches(ray.get_actor(config["store_name"]), rank, cfg, int(config["round"]),
                                 int(config["rounds_end"]), cur, start_round)
    for batch in batches:
        if batch is ROUND_END:
            opt.zero_grad(set_to_none=True)  # a partial accumulation does not leak into the next round
            micro = pending_rows = pending_drop = 0
            publish("end_of_round")
            t_mark = time.time()
            continue
        now = time.time()
        wait_s += now - t_mark
        staleness = version - np.asarray(batch["policy_version"], np.int64)
        valid = staleness <= max_stale
        for s in staleness:
            stale_hist[min(int(s), len(stale_hist) - 1)] += 1
            metrics_sink.observe("row_staleness", int(s))
        if semi:
            window_rows += _window_records(batch, staleness, valid, version)
        pending_rows += len(valid)
        pending_drop += int((~valid).sum())
        for _ in range(tc.updates_per_batch):  # sample reuse: each pass its own t, noise and real clips
            real = next(real_it) if real_it is not None else None
            loss, m = step_fn(batch, real, valid, step)
            (loss / tc.grad_accum).backward()
            acc_metrics.append(m)
            micro += 1
            if micro % tc.grad_accum:
                continue
            torch.nn.utils.clip_grad_norm_(params, tc.grad_clip)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            since_sync += 1
            counts = torch.tensor([pending_rows, pending_drop], dtype=torch.float64)
            pending_rows = pending_drop = 0
            if dist.is_available() and dist.is_initialized():
                dist.all_reduce(counts)
            consumed_total += int(counts[0])
            if rank == 0:
                t_now = time.time()
                rec = {k: float(np.mean([x[k] for x in acc_metrics if k in x])) for k in acc_metrics[-1]}
                rec.update({"event": "step", "step": step, "version": version, "round": cur["round"],
                            "rows": int(counts[0]), "dropped_stale": int(counts[1]),
                            "staleness_mean": float(staleness.mean()), "lr": sched.get_last_lr()[0],
                            "idle_fraction": wait_s / max(wait_s + busy_s + t_now - now, 1e-9), "time": t_now})
                run.log_metrics(rec)
                metrics_sink.count("samples_trained", int(counts[0]))
                metrics_sink.count("rows_dropped_stale", int(counts[1]))
                metrics_sink.gauge("trainer_idle_fraction", rec["idle_fraction"])
                metrics_sink.count("trainer_idle_seconds", wait_s - wait_reported)
                wait_reported = wait_s
                metrics_sink.gauge("staleness", rec["staleness_mean"])
                metrics_sink.observe("step_seconds", t_now - now)
                metrics_sink.gauge("trainer_samples_per_second", int(counts[0]) / max(t_now - now, 1e-9))
                ray.get(store.report_consumed.remote(consumed_total, None, int(counts[1])))
                if step % 10 == 0:
                    log.info(f"[trainer] step {step} v{version} loss {rec.get('loss', float('nan')):.4f} "
                             f"idle {rec['idle_fraction']:.2f}")
            acc_metrics = []
            if fault_after and step >= fault_after:
                raise RuntimeError(f"fault injected after step {step} ({FAULT_ENV})")
        t_mark = time.time()
        busy_s += t_mark - now
        if semi and since_sync >= lc.sync_every:  # after the batch's last pass: a checkpoint never splits a batch
            publish("sync_every")
    hist = torch.from_numpy(stale_hist.astype(np.float64))
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(hist)
    stale_hist = hist.numpy().astype(np.int64)
    if rank == 0:
        ray.get(store.report_consumed.remote(consumed_total, {i: int(c) for i, c in enumerate(stale_hist) if c}, 0))
    if semi and since_sync > 0:
        publish("end_of_stream")
    if rank == 0:
        run.log_metrics({"event": "trainer_done", "round": cur["round"], "step": step, "version": version,
                         "consumed_rows": consumed_total, "idle_fraction": wait_s / max(wait_s + busy_s, 1e-9),
                         "wait_seconds": wait_s, "busy_seconds": busy_s,
                         "staleness_hist": {str(i): int(c) for i, c in enumerate(stale_hist)}})


PROVENANCE = ("row_id", "kind", "group_id", "prompt", "round", "policy_version", "sample_id", "seed", "score",
              "label", "sample_id_l", "seed_l", "score_l", "label_l", "desirable", "reward", "critic", "frames_path",
              "frames_path_l")


def _window_records(batch: dict, staleness: np.ndarray, valid: np.ndarray, version: int) -> list[dict]:
    """What a rank trained in this sync window: the rows' provenance (not their latents)."""
    n = len(batch["row_id"])
    recs = [{k: (batch[k][i].item() if hasattr(batch[k][i], "item") else batch[k][i]) for k in PROVENANCE}
            for i in range(n)]
    for rec, s, ok in zip(recs, staleness, valid):
        rec.update(trained_at_version=version, staleness=int(s), dropped_stale=bool(not ok))
    return recs


def _write_window(run: RunDir, version: int, rank: int, rows: list[dict]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = run.path / "data" / "consumed" / f"window_{version:06d}"
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), out / f"rank_{rank}.parquet")
