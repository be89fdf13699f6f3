"""Probe: how fast does a fresh tiny world model learn to read the motion words at pure noise (t = 999)?

Trains only at t = 999 on four red-square prompts (one per direction, correct renders), so the best
output is each prompt's mean clip, and prints the predicted clips' centroid travel every 50 steps.
Notes and numbers: benchmarks/RESULTS.md ("Base model: what limited it ... (notes)").

    python benchmarks/probe_high_noise.py --steps 500 [--frozen-text] [--no-qk-norm] [--patch 4]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ipo_ray.codec import frames_to_unit  # noqa: E402
from ipo_ray.config import load_config  # noqa: E402
from ipo_ray.policy import T2VPolicy  # noqa: E402
from ipo_ray.pretrain import world_batch  # noqa: E402

PROMPTS = [f"a red square {m}" for m in ("moves from left to right", "moves from right to left", "falls down", "rises up")]


def red_travel(x0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Horizontal and vertical travel (last frame - first) of the red mass of predicted clips [B, F, 3, H, W]."""
    red = ((x0[:, :, 0] + 1) / 2).clamp(min=0) ** 2
    pos = torch.arange(red.shape[-1], dtype=red.dtype)
    cx = (red.sum(-2) * pos).sum(-1) / red.sum((-1, -2))
    cy = (red.sum(-1) * pos).sum(-1) / red.sum((-1, -2))
    return cx[:, -1] - cx[:, 0], cy[:, -1] - cy[:, 0]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--frozen-text", action="store_true", help="keep the random text encoder fixed")
    ap.add_argument("--no-qk-norm", action="store_true")
    ap.add_argument("--patch", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    cfg = load_config(ROOT / "configs" / "world-tiny.yaml", [f"model.tiny.patch_size={args.patch}"])
    policy = T2VPolicy.build_tiny(cfg.model)
    policy.text_encoder.requires_grad_(not args.frozen_text).train()
    if args.no_qk_norm:
        for block in policy.transformer.transformer_blocks:
            block.attn1.norm_q = block.attn1.norm_k = None
    params = [q for m in (policy.transformer, policy.text_encoder) for q in m.parameters() if q.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0)
    t999 = torch.full((16,), 999)
    start = time.time()
    for step in range(1, args.steps + 1):
        prompts, videos = world_batch(rng, PROMPTS, 16, cfg, 0.0)
        x0 = frames_to_unit(videos)
        loss = policy.training_error(x0, policy.encode_prompts_trainable(prompts), t999, torch.randn_like(x0)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 50 == 0:
            with torch.no_grad():
                v = policy.transformer(hidden_states=torch.randn(4, *policy.latent_shape()),
                                       encoder_hidden_states=policy.encode_prompts(PROMPTS),
                                       timestep=t999[:4], return_dict=False)[0]
            dx, dy = red_travel(-v)  # at t = 999 the v target is -x0
            print(f"step {step} loss {loss.item():.4f} {time.time() - start:.0f}s  travel dx: left-to-right "
                  f"{dx[0]:+.1f} right-to-left {dx[1]:+.1f}  dy: falls {dy[2]:+.1f} rises {dy[3]:+.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
