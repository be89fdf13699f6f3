"""In-process learning probe: the loop's math without Ray, to search settings fast.

Same pieces as the Ray loop (``T2VPolicy``, ``seeds_for``, the world critic's labels,
``rows_for``, the trainer's ``PreferenceStep``), run in one process: sample K videos per
prompt with the current policy, judge, make rows, train E epochs, move the reference, evaluate on
fixed prompts and seeds. What this finds must then be confirmed with the Ray loop
(``benchmarks/learning.py``), which is what the results table reports.

    python benchmarks/learning_probe.py --name dpo-lr3e-4 --set train.lr=3e-4 --set loop.epochs_per_round=8
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.results import update_section  # noqa: E402
from ipo_ray.config import load_config  # noqa: E402
from ipo_ray.evaluate import evaluate_policy  # noqa: E402
from ipo_ray.critic.base import label_for  # noqa: E402
from ipo_ray.policy import seeds_for  # noqa: E402
from ipo_ray.rows import columns, rows_for  # noqa: E402
from ipo_ray.run_dir import load_base_policy  # noqa: E402
from ipo_ray.objective import PreferenceStep  # noqa: E402
from ipo_ray.world import ACCEPT, judge, render, splits  # noqa: E402
from jobs.report import base_eval_key  # noqa: E402

STORE = ROOT / "benchmarks" / "learning_probe"


def sample_scores(policy, prompts, seeds, cfg, bs=32):
    s = cfg.sampling
    jobs = [(p, sd) for p, ss in zip(prompts, seeds) for sd in ss]
    out = []
    with torch.no_grad():
        for i in range(0, len(jobs), bs):
            chunk = jobs[i:i + bs]
            frames, lat = policy.sample([p for p, _ in chunk], [x for _, x in chunk], s.steps, s.guidance_scale)
            for (p, sd), fr, la in zip(chunk, frames, lat.cpu().numpy().astype(np.float32)):
                out.append((p, sd, judge(fr, p), la))
    return out


def evaluate(policy, cfg, ev_seeds: int, held_seeds: int) -> dict:
    """The project's evaluation (``evaluate_policy``: fixed prompts, seeds from 10,000), without videos."""
    sp = splits()
    prompts = sp["train"] + sp["heldout"]
    seeds = [ev_seeds] * len(sp["train"]) + [held_seeds] * len(sp["heldout"])
    with tempfile.TemporaryDirectory() as d:
        s = evaluate_policy(policy, prompts, seeds, d, steps=cfg.sampling.steps, guidance_scale=cfg.sampling.guidance_scale,
                            seed_offset=cfg.eval.seed_offset, save_videos=False, with_metrics=False)
    return {k: {"acceptance": s[k]["acceptance"], "mean": s[k]["mean_score"], "n": s[k]["n"]} for k in ("train", "heldout")}


def base_eval(policy, cfg, ev_seeds: int, held_seeds: int) -> dict:
    """The base's evaluation, cached under the report's key for the base weights and this plan."""
    sp = splits()
    key = base_eval_key(cfg, sp["train"] + sp["heldout"], [ev_seeds] * len(sp["train"]) + [held_seeds] * len(sp["heldout"]))
    cache = ROOT / ".cache" / "probe-base-eval" / f"{key or 'none'}.json"
    if key is not None and cache.is_file():
        return json.loads(cache.read_text())
    res = evaluate(policy, cfg, ev_seeds, held_seeds)
    if key is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(res))
    return res


def table() -> str:
    rows = [json.loads(p.read_text()) for p in sorted(STORE.glob("*.json"))]
    lines = ["In-process probes (no Ray: the loop's pieces in one process; the base eval is shared): "
             "50 train prompts x 4 seeds and 10 held-out x 10 per checkpoint, the same for every probe, so a "
             "difference of about 3 points in acceptance is within noise; mean score moves less by chance. "
             "Steps are optimizer steps per round.", "",
             "| probe | command | train acceptance per round | held-out acceptance | train mean score | held-out mean "
             "score | rows / steps per round |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        ev = r["evals"]
        f = lambda split, key: " -> ".join(f"{e[split][key]:.3f}" for e in ev)  # noqa: E731
        steps = " / ".join(f"{x['rows']}/{x['steps']}" for x in r["rounds"])
        lines.append(f"| {r['name']} | `{r['command']}` | {f('train', 'acceptance')} | {f('heldout', 'acceptance')} | "
                     f"{f('train', 'mean')} | {f('heldout', 'mean')} | {steps} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--name")
    ap.add_argument("--config", default="configs/world-tiny.yaml")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--eval-seeds", type=int, default=4, help="seeds per train prompt (50 prompts)")
    ap.add_argument("--heldout-seeds", type=int, default=10, help="seeds per held-out prompt (14 prompts)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--table-only", action="store_true", help="rebuild the RESULTS table from the stored probes")
    args = ap.parse_args(argv)
    if args.table_only:
        update_section("Learning probes (in-process, verifiable world)", table())
        return 0
    if not args.name:
        ap.error("--name is required (or --table-only)")
    torch.set_num_threads(args.threads)
    cfg = load_config(ROOT / args.config, args.overrides)
    a, tc, lc, k = cfg.algo, cfg.train, cfg.loop, cfg.sampling.num_per_prompt
    torch.manual_seed(tc.seed)
    policy = load_base_policy(cfg).setup_finetune()
    model = policy.transformer
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=tc.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, tc.warmup_steps))
                                              if tc.warmup_steps else 1.0)  # as the Ray trainer
    step_fn = PreferenceStep(policy, model, cfg, "cpu")
    train_prompts = splits()["train"]
    rng = np.random.default_rng(cfg.seed)
    global_batch = tc.batch_size * tc.num_workers  # the Ray trainer's rows per optimizer step
    real_bs = tc.real_batch_size * tc.num_workers
    evals = [base_eval(policy, cfg, args.eval_seeds, args.heldout_seeds)]
    print(f"base: {json.dumps(evals[-1])}", flush=True)
    rounds, step = [], 0
    for r in range(lc.rounds):
        t0 = time.time()
        idx = rng.permutation(len(train_prompts))[:lc.prompts_per_round]
        prompts = [train_prompts[i] for i in idx]
        got = sample_scores(policy, prompts, [seeds_for(int(i), k, cfg.seed, r) for i in idx], cfg)
        samples = [{"sample_id": f"r{r}-{p}-{sd}", "group_id": f"r{r}-{p}", "prompt": p, "round": r,
                    "policy_version": r, "seed": sd, "score": sc, "label": label_for(sc), "critic_text": "",
                    "latents": la.tobytes(), "latent_shape": list(la.shape)} for p, sd, sc, la in got]
        gen_s = time.time() - t0
        rows, counts = rows_for(samples, a, "world")
        losses = []
        model.train()
        for ep in range(lc.epochs_per_round):
            order = rng.permutation(len(rows))
            for i in range(0, len(rows), global_batch):
                batch = columns([rows[j] for j in order[i:i + global_batch]])
                real = None
                if real_bs and a.lambda_real > 0:
                    rp = [train_prompts[j] for j in rng.integers(0, len(train_prompts), real_bs)]
                    real = {"prompt": rp, "frames": np.stack([render(p, int(rng.integers(1 << 30))) for p in rp])}
                loss, m = step_fn(batch, real, np.ones(len(batch["row_id"]), bool), step)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, tc.grad_clip)
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
                step += 1
                losses.append(m)
        model.eval()
        if lc.ref_update_every > 0:
            policy.move_reference()
        train_s = time.time() - t0 - gen_s
        evals.append(evaluate(policy, cfg, args.eval_seeds, args.heldout_seeds))
        keys = losses[0].keys() if losses else []
        rec = {"round": r, "rows": len(rows), "steps": len(losses), "gen_s": gen_s, "train_s": train_s,
               "sample_acceptance": float(np.mean([g[2] >= ACCEPT for g in got])),
               "sample_mean": float(np.mean([g[2] for g in got])),
               "first": {kk: float(np.mean([x[kk] for x in losses[:3]])) for kk in keys},
               "last": {kk: float(np.mean([x[kk] for x in losses[-3:]])) for kk in keys}}
        rounds.append(rec)
        print(f"round {r}: rows {len(rows)} steps {len(losses)} gen {gen_s:.0f}s train {train_s:.0f}s "
              f"samples acc {rec['sample_acceptance']:.3f} | eval {json.dumps(evals[-1])}", flush=True)
    STORE.mkdir(parents=True, exist_ok=True)
    cmd = f"python benchmarks/learning_probe.py --name {args.name}" + "".join(f" --set {o}" for o in args.overrides)
    (STORE / f"{args.name}.json").write_text(json.dumps({"name": args.name, "command": cmd, "evals": evals,
                                                          "rounds": rounds}, indent=2))
    tr = " -> ".join(f"{e['train']['acceptance']:.3f}" for e in evals)
    he = " -> ".join(f"{e['heldout']['acceptance']:.3f}" for e in evals)
    print(f"{args.name}: train {tr} | held-out {he}")
    update_section("Learning probes (in-process, verifiable world)", table())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
