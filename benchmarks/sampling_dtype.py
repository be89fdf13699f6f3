"""Rollout precision and denoising steps: speed and quality of the base's samples, the same videos each way.

    python benchmarks/sampling_dtype.py                      # float32 / bfloat16 at 8 steps, bfloat16 at 6
    python benchmarks/sampling_dtype.py --per-prompt 4 --settings float32:8 bfloat16:6

Each setting samples the committed base (``configs/world-tiny.yaml``'s model, guidance and batch size) on every
train prompt with the same seeds, in one process with 2 threads, and judges every video. Writes the section
"Sampling precision" of benchmarks/RESULTS.md: videos per second of sampling alone (judging excluded), train
acceptance (score >= the judge's ACCEPT, 0.8), mean score, and how many videos change their verdict against the
first setting.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.results import update_section  # noqa: E402

TITLE = "Sampling precision"


def measure(cfg, dtype: str, steps: int, prompts: list[str], seeds: list[int]) -> dict:
    import torch

    from ipo_ray.run_dir import load_base_policy
    from ipo_ray.world.judge import ACCEPT, judge

    policy = load_base_policy(cfg.model_copy(update={"sampling": cfg.sampling.model_copy(update={"dtype": dtype})}),
                              sampling=True)
    policy.transformer.eval()
    bs, scores, sample_s = cfg.sampling.batch_size, [], 0.0
    with torch.inference_mode():
        for i in range(0, len(prompts), bs):
            t0 = time.perf_counter()
            frames, _ = policy.sample(prompts[i:i + bs], seeds[i:i + bs], steps, cfg.sampling.guidance_scale)
            sample_s += time.perf_counter() - t0
            scores += [judge(f, p) for f, p in zip(frames, prompts[i:i + bs])]
    s = np.asarray(scores)
    return {"dtype": dtype, "steps": steps, "videos": len(s), "videos_per_s": len(s) / sample_s,
            "acceptance": float((s >= ACCEPT).mean()), "mean_score": float(s.mean()), "accepted": s >= ACCEPT}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/world-tiny.yaml")
    ap.add_argument("--per-prompt", type=int, default=8, help="seeds per train prompt")
    ap.add_argument("--settings", nargs="+", default=["float32:8", "bfloat16:8", "bfloat16:6"], help="DTYPE:STEPS")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)

    import torch

    from ipo_ray.config import load_config
    from ipo_ray.world.grammar import splits

    torch.set_num_threads(2)
    cfg = load_config(ROOT / args.config)
    prompts = [p for p in splits()["train"] for _ in range(args.per_prompt)]
    seeds = [1000 + i for i in range(len(prompts))]
    rows = []
    for setting in args.settings:
        dtype, steps = setting.split(":")
        rows.append(measure(cfg, dtype, int(steps), prompts, seeds))
        r = rows[-1]
        print(f"{dtype} {steps} steps: {r['videos_per_s']:.2f} videos/s, acceptance {r['acceptance']:.3f}, "
              f"mean score {r['mean_score']:.3f}", flush=True)
    first = rows[0]["accepted"]
    cli = " ".join(argv if argv is not None else sys.argv[1:])
    lines = [f"Command: `python benchmarks/sampling_dtype.py{' ' + cli if cli else ''}`",
             "", f"The committed base on the {len(prompts)} same train videos ({args.per_prompt} seeds x 50 prompts), "
             f"guidance {cfg.sampling.guidance_scale}, batch {cfg.sampling.batch_size}, one process with 2 threads; "
             "speed counts sampling only (judging excluded). Verdicts changed: videos whose accepted/rejected verdict "
             "differs from the first row's.", "",
             "| sampling dtype | steps | videos/s | train acceptance | mean score | verdicts changed |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['dtype']} | {r['steps']} | {r['videos_per_s']:.2f} | {r['acceptance']:.3f} | "
                     f"{r['mean_score']:.3f} | {int((r['accepted'] != first).sum())} |")
    if not args.no_write:
        update_section(TITLE, "\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
