"""Why the world base never draws a square, and what teaches it: continue the base with contrast pairs
(``pretrain.shape_pairs`` / ``shape_weight``), optionally with extra transformer blocks, and measure the
shape word's effect as it trains.

Every ``--every`` steps the EMA weights are measured on the train prompts (``--seeds`` each, 8 steps,
guidance 2): acceptance, single-object square / circle acceptance, and how much the prompt's shape word
changes the denoiser's clean-clip estimate of the same noisy square clips at t = 700 (corner fill under
"square" minus under "circle"; 0 means the word is ignored). ``--grow N`` inserts N blocks whose output
gates start at zero (adaLN-zero), so the grown model starts as the base and only adds capacity.

    python benchmarks/shape_probe.py --steps 2000 --shape-pairs 4 --shape-weight 10 --grow 2 --out /tmp/p
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def measure(policy, seeds: int, seed0: int = 1000) -> dict:
    import torch

    from benchmarks.base_probe import shape_sensitivity
    from ipo_ray.evaluate import summarize
    from ipo_ray.world import splits
    from ipo_ray.world.judge import judge_details

    prompts = [p for p in splits()["train"] for _ in range(seeds)]
    seeds_ = [seed0 + i % seeds for i in range(len(prompts))]
    with torch.no_grad():
        frames = np.concatenate([policy.sample(prompts[i:i + 50], seeds_[i:i + 50], 8, 2.0)[0]
                                 for i in range(0, len(prompts), 50)])
    det = [judge_details(v, p) for v, p in zip(frames, prompts)]
    scores = np.array([d["score"] for d in det])
    out = {k: summarize(scores, prompts)[k] for k in ("acceptance", "mean_score", "frac_prompts_strictly_between_10_90")}
    for shape in ("square", "circle"):
        idx = [i for i, p in enumerate(prompts) if " and " not in p and p.split()[2] == shape]
        out[f"{shape}_acc"] = float((scores[idx] >= 0.8).mean())
        out[f"{shape}_shape_term"] = float(np.mean([det[i]["shape"] for i in idx]))
    idx = [i for i, p in enumerate(prompts) if " and " not in p]
    out["single_motion_term"] = float(np.mean([det[i]["motion"] for i in idx]))
    sq, ci = shape_sensitivity(policy, 700)
    out["fill_square_minus_circle_t700"] = sq - ci
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--base", default="assets/world-base")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--every", type=int, default=400)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--shape-pairs", type=int, default=4)
    ap.add_argument("--shape-weight", type=float, default=10.0)
    ap.add_argument("--high-noise-fraction", type=float, default=0.7)
    ap.add_argument("--flawed-fraction", type=float, default=0.3)
    ap.add_argument("--ema-decay", type=float, default=0.995)
    ap.add_argument("--grow", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=6)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    import torch

    from ipo_ray.config import load_config
    from ipo_ray.policy import T2VPolicy
    from ipo_ray.pretrain import batch_loss, grow_transformer
    from ipo_ray.world import splits

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    cfg = load_config(ROOT / "configs" / "world-tiny.yaml", [
        f"pretrain.batch_size={args.batch_size}", f"pretrain.shape_pairs={args.shape_pairs}",
        f"pretrain.shape_weight={args.shape_weight}", f"pretrain.high_noise_fraction={args.high_noise_fraction}",
        f"pretrain.flawed_fraction={args.flawed_fraction}", "pretrain.text_dropout=0.1"])
    policy = T2VPolicy.from_pretrained(args.base)
    if args.grow:
        policy.transformer, order = grow_transformer(policy.transformer, args.grow)
        print(f"grown to {policy.transformer.config.num_layers} blocks, order {order}", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = open(out / "probe.jsonl", "a")

    def record(step, model_policy, loss, t0):
        model_policy.transformer.eval()
        m = {"step": step, "minutes": (time.time() - t0) / 60, "loss": loss, **measure(model_policy, args.seeds)}
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in m.items()}), flush=True)
        log.write(json.dumps(m) + "\n")
        log.flush()

    modules = torch.nn.ModuleList([policy.transformer, policy.text_encoder])
    ema = torch.optim.swa_utils.AveragedModel(modules, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(args.ema_decay))
    ema_policy = T2VPolicy(ema.module[0], ema.module[1], policy.tokenizer, policy.scheduler, policy.codec, policy.cfg)
    params = list(modules.parameters())
    policy.text_encoder.requires_grad_(True).train()
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    train_prompts = splits()["train"]
    t0, losses = time.time(), []
    record(0, ema_policy, float("nan"), t0)
    for step in range(1, args.steps + 1):
        policy.transformer.train()
        loss = batch_loss(policy, rng, train_prompts, cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        ema.update_parameters(modules)
        losses.append(loss.item())
        if step % args.every == 0 or step == args.steps:
            record(step, ema_policy, float(np.mean(losses[-args.every:])), t0)
    ema_policy.text_encoder.eval().requires_grad_(False)
    ema_policy.save(out / "base")
    print(f"wrote {out / 'base'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
