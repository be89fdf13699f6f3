"""A real-size VLM critic on one GPU, random weights: what judging a pair of 480x720 videos costs.

A ``Qwen2VLForConditionalGeneration`` with the published Qwen2-VL-7B-Instruct sizes (8.3B parameters),
built on the GPU in bfloat16, asked the IPO pairwise question (16 frames per video, both orders) and
the binary Accept/Reject question (8 frames) through the project's own ``TransformersEngine`` and
``VLMCritic`` (frames fed as images, ``max_frame_pixels`` downscaling, log-prob scores). The text goes
through the critic's word tokenizer (``ipo_ray.critic.tiny``); real runs load Qwen's tokenizer and
processor with ``from_pretrained``. Random weights answer at random, so every request runs to
``max_new_tokens`` (the slowest case) and most verdicts are unparsable: this measures cost, not judgement.

  python benchmarks/gpu_critic.py --out gpu_critic.json              # on a CUDA machine
  python benchmarks/gpu_critic.py --size tiny --out /tmp/c.json      # CPU smoke (tests)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.gpu_realsize import Clock  # noqa: E402
from ipo_ray.critic.prompts import get_template, render as render_prompt  # noqa: E402
from ipo_ray.critic.protocols import VLMCritic  # noqa: E402
from ipo_ray.critic.tiny import QWEN2VL_CHAT_TEMPLATE, QWEN2VL_SPECIAL, critic_words, word_tokenizer  # noqa: E402
from ipo_ray.critic.vlm import Request, TransformersEngine, frames_processor  # noqa: E402
from ipo_ray.world import render  # noqa: E402

PROMPT = "a red circle moves from left to right"
# Qwen2-VL-7B-Instruct's published sizes; the tiny ones keep the same classes for a CPU smoke run.
SIZES = {
    "full": dict(text=dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                           num_attention_heads=28, num_key_value_heads=4, rope_theta=1e6, mrope=[16, 24, 24]),
                 vision=dict(depth=32, embed_dim=1280, num_heads=16, mlp_ratio=4, patch_size=14),
                 video=(49, 480, 720), max_frame_pixels=448 * 448),
    "tiny": dict(text=dict(vocab_size=None, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                           num_attention_heads=2, num_key_value_heads=1, rope_theta=1e4, mrope=[4, 2, 2]),
                 vision=dict(depth=1, embed_dim=16, num_heads=2, mlp_ratio=2, patch_size=4),
                 video=(9, 32, 48), max_frame_pixels=16 * 24),
}


def build_engine(size: str, device: torch.device, max_new_tokens: int, batch_size: int) -> TransformersEngine:
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLImageProcessorPil

    s = SIZES[size]
    tok = word_tokenizer(QWEN2VL_SPECIAL, critic_words(), eos="<|im_end|>", pad="<|endoftext|>")
    tok.chat_template = QWEN2VL_CHAT_TEMPLATE
    ids = tok.convert_tokens_to_ids
    t, v = s["text"], s["vision"]
    cfg = Qwen2VLConfig(
        text_config=dict(vocab_size=t["vocab_size"] or len(tok), hidden_size=t["hidden_size"],
                         intermediate_size=t["intermediate_size"], num_hidden_layers=t["num_hidden_layers"],
                         num_attention_heads=t["num_attention_heads"], num_key_value_heads=t["num_key_value_heads"],
                         max_position_embeddings=32768,
                         rope_parameters={"rope_type": "default", "mrope_section": t["mrope"], "rope_theta": t["rope_theta"]},
                         bos_token_id=ids("<|endoftext|>"), eos_token_id=ids("<|im_end|>"), pad_token_id=ids("<|endoftext|>")),
        vision_config=dict(depth=v["depth"], embed_dim=v["embed_dim"], hidden_size=t["hidden_size"],
                           num_heads=v["num_heads"], mlp_ratio=v["mlp_ratio"], patch_size=v["patch_size"],
                           spatial_merge_size=2, temporal_patch_size=2),
        image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"))
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2VLForConditionalGeneration(cfg).to(dtype).eval()
    factor = v["patch_size"] * 2
    image_processor = Qwen2VLImageProcessorPil(patch_size=v["patch_size"], merge_size=2, temporal_patch_size=2,
                                               min_pixels=factor * factor, max_pixels=s["max_frame_pixels"])
    return TransformersEngine(model, frames_processor(image_processor, tok), max_new_tokens=max_new_tokens,
                              batch_size=batch_size)


def videos(size: str, n: int) -> list[np.ndarray]:
    """World renders (each a moving colored shape) scaled up to the real model's frame size."""
    f, h, w = SIZES[size]["video"]
    out = []
    for seed in range(n):
        small = render(PROMPT, seed)
        idx = np.linspace(0, len(small) - 1, f).round().astype(int)
        out.append(np.stack([cv2.resize(small[i], (w, h), interpolation=cv2.INTER_NEAREST) for i in idx]))
    return out


def measure(size: str, k: int, max_new_tokens: int, batch_size: int) -> dict:
    """Judge one group of ``k`` videos the way the loop's critic actor does (pairwise: every pair in
    both orders, k(k-1) requests; binary: k requests)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cuda = device.type == "cuda"
    timed = Clock(device).run

    engine, build_s, _ = timed(lambda: build_engine(size, device, max_new_tokens, batch_size))
    res = {"size": size, "device": torch.cuda.get_device_name() if cuda else "cpu", "torch": torch.__version__,
           "build_s": build_s, "params_b": round(sum(p.numel() for p in engine.model.parameters()) / 1e9, 3),
           "max_new_tokens": max_new_tokens, "batch_size": batch_size, "video": list(SIZES[size]["video"]),
           "group_size": k}
    vids = videos(size, k)
    for protocol in ("pairwise", "binary"):
        critic = VLMCritic(engine, protocol, max_frame_pixels=SIZES[size]["max_frame_pixels"])
        critic.judge_group(PROMPT, vids[:2])  # warm-up
        judged, s, peak = timed(lambda: critic.judge_group(PROMPT, vids))
        requests = k * (k - 1) if protocol == "pairwise" else k
        slots = 2 if protocol == "pairwise" else 1
        t = get_template(protocol, critic.prompt_version)
        frames = critic._frames(protocol, vids[0])
        req = Request(render_prompt(t, PROMPT, frames.shape[0], critic.dimension), [frames] * slots)
        tokens = int(engine.encode([req])[2]["input_ids"].shape[1])
        res[protocol] = {"frames_per_video": int(frames.shape[0]), "frame_hw": list(frames.shape[1:3]),
                         "prompt_tokens_per_request": tokens, "requests_per_group": requests,
                         "seconds_per_group": s, "s_per_request": round(s / requests, 3),
                         "s_per_video": round(s / k, 3), "peak_gib": peak,
                         "parsed": int(sum(j.valid for j in judged))}
    return res


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=list(SIZES), default="full")
    ap.add_argument("--k", type=int, default=4, help="videos per group (the preset's sampling.num_per_prompt)")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    res = measure(a.size, a.k, a.max_new_tokens, a.batch_size)
    Path(a.out).write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()
