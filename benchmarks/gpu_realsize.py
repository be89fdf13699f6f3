"""Real-size CogVideoX-2B on one GPU, random weights: what a generator actor and a trainer worker cost.

No hub download can happen here, so every module is built from the published CogVideoX-2B configs
(diffusers' ``CogVideoXTransformer3DModel`` and ``AutoencoderKLCogVideoX`` defaults are the 2B
ones; a T5-v1.1-XXL encoder from its config; the 2B ``CogVideoXDDIMScheduler`` settings) and run
through the project's own code paths: ``T2VPolicy.sample_latents`` (what the generator actor calls),
``VAECodec`` decode/encode, ``PreferenceStep`` (the trainer's DPO micro-batch with the reference
forward), ``train_params_float32`` + bf16 autocast, ``policy_state`` (what a weight sync ships).
Token ids come from the world tokenizer padded to T5's 226 positions (real runs load T5's own
tokenizer with ``from_pretrained``; the sequence length and so the cost are the same).

  python benchmarks/gpu_realsize.py --out gpu_realsize.json            # on a CUDA machine
  python benchmarks/gpu_realsize.py --size tiny --out /tmp/tiny.json   # CPU smoke (tests)

Needs torch, diffusers, transformers, peft, pydantic, pyyaml, tokenizers; not Ray.
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffusers import AutoencoderKLCogVideoX, CogVideoXDDIMScheduler, CogVideoXTransformer3DModel  # noqa: E402
from transformers import T5Config, T5EncoderModel  # noqa: E402

from ipo_ray.codec import VAECodec  # noqa: E402
from ipo_ray.config import load_config  # noqa: E402
from ipo_ray.objective import PreferenceStep  # noqa: E402
from ipo_ray.policy import T2VPolicy  # noqa: E402
from ipo_ray.rows import encode_latents  # noqa: E402
from ipo_ray.tokenizer import build_world_tokenizer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "a red circle moves from left to right"

# T5-v1.1-XXL encoder (CogVideoX's text encoder) and the 2B scheduler, from their published configs.
T5_XXL = dict(vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
              relative_attention_num_buckets=32, relative_attention_max_distance=128, feed_forward_proj="gated-gelu",
              layer_norm_epsilon=1e-6, dropout_rate=0.0, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
SCHED_2B = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                num_train_timesteps=1000, prediction_type="v_prediction", rescale_betas_zero_snr=True,
                set_alpha_to_one=True, snr_shift_scale=3.0, steps_offset=0, timestep_spacing="trailing")
# A CPU smoke version of the same classes (the test suite runs the script end to end with it).
TINY = dict(transformer=dict(num_attention_heads=2, attention_head_dim=16, num_layers=1, text_embed_dim=32,
                             time_embed_dim=32, sample_frames=9, sample_height=8, sample_width=8),
            vae=dict(block_out_channels=(8, 8, 8, 8), layers_per_block=1, norm_num_groups=4),
            t5=dict(d_model=32, d_kv=16, d_ff=64, num_layers=1, num_heads=2),
            model=dict(frames=9, height=64, width=64), lora_rank=4)


def build(size: str, device: torch.device, dtype: torch.dtype):
    """The CogVideoX-2B policy with random weights (``size='full'``) or its tiny smoke version."""
    cfg = load_config(ROOT / "configs" / "cogvideox-2b.yaml")
    tiny = size == "tiny"
    mcfg = cfg.model.model_copy(update={"source": "pretrained", "dtype": "bfloat16" if dtype == torch.bfloat16
                                        else "float32", **(TINY["model"] if tiny else {})})
    if tiny:
        mcfg = mcfg.model_copy(update={"lora": mcfg.lora.model_copy(update={"rank": TINY["lora_rank"],
                                                                           "alpha": TINY["lora_rank"]})})
    cfg = cfg.model_copy(update={"model": mcfg})
    tokenizer = build_world_tokenizer()
    with torch.device(device):  # random init straight on the GPU (T5-XXL on a CPU takes minutes)
        transformer = CogVideoXTransformer3DModel(**(TINY["transformer"] if tiny else {}))
        max_len = transformer.config.max_text_seq_length
        tokenizer.model_max_length = max_len
        text_encoder = T5EncoderModel(T5Config(**{**T5_XXL, **(TINY["t5"] if tiny else {})}))
        vae = AutoencoderKLCogVideoX(**(TINY["vae"] if tiny else {}))
    transformer.to(dtype)
    text_encoder.to(dtype)
    vae.to(dtype)
    policy = T2VPolicy(transformer, text_encoder, tokenizer, CogVideoXDDIMScheduler(**SCHED_2B),
                       VAECodec(vae, tiling=mcfg.vae_tiling), mcfg)
    policy.device = device
    return policy, cfg


class Clock:
    def __init__(self, device):
        self.cuda = device.type == "cuda"

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    def reset_peak(self):
        if self.cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()

    def peak_gib(self):
        return round(torch.cuda.max_memory_allocated() / 2**30, 2) if self.cuda else None

    def run(self, fn):
        self.reset_peak()
        self.sync()
        t0 = time.perf_counter()
        out = fn()
        self.sync()
        return out, round(time.perf_counter() - t0, 3), self.peak_gib()


def _oom_safe(clock, fn):
    try:
        out, s, peak = clock.run(fn)
        return out, {"seconds": s, "peak_gib": peak}
    except torch.OutOfMemoryError as e:  # a finding, not a crash: record it and free the memory
        clock.reset_peak()
        return None, {"error": f"OutOfMemoryError: {str(e).splitlines()[0][:160]}"}


def measure(size: str, sample_steps: int, train_steps: int, save=lambda res: None, dtype: str = "bfloat16",
            only_real: bool = False) -> dict:
    """Every section is saved as soon as it is measured (a later failure keeps the earlier numbers)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = getattr(torch, dtype)
    clock = Clock(device)
    res: dict = {"size": size, "device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor()
                 or "cpu", "torch": torch.__version__, "dtype": str(dtype).replace("torch.", "")}
    import diffusers
    import peft
    import transformers

    res["versions"] = {"diffusers": diffusers.__version__, "transformers": transformers.__version__,
                       "peft": peft.__version__}
    (policy, cfg), res["build_s"], _ = clock.run(lambda: build(size, device, dtype))
    res["params_m"] = {"transformer": round(policy.num_parameters() / 1e6, 1),
                       "text_encoder": round(sum(p.numel() for p in policy.text_encoder.parameters()) / 1e6, 1),
                       "vae": round(sum(p.numel() for p in policy.codec.vae.parameters()) / 1e6, 1)}
    res["latent_shape"] = list(policy.latent_shape())
    res["video"] = [cfg.model.frames, cfg.model.height, cfg.model.width]
    g = cfg.sampling.guidance_scale

    # 1. Generation (the generator actor's call): one video at the preset's steps, then a batch of 2.
    res["sampling"] = []
    latents = torch.randn((1, *policy.latent_shape()))
    for batch, steps in () if only_real else ((1, sample_steps), (2, max(2, sample_steps // 5))):
        policy.sample_latents([PROMPT] * batch, list(range(batch)), steps=2, guidance_scale=g)  # warm-up
        lat, info = _oom_safe(clock, lambda: policy.sample_latents([PROMPT] * batch, list(range(batch)),
                                                                   steps=steps, guidance_scale=g))
        info.update(batch=batch, steps=steps, cfg_guidance=g)
        if "seconds" in info:
            info["s_per_step"] = round(info["seconds"] / steps, 4)
            info["s_per_video_at_50_steps"] = round(info["seconds"] / steps * 50 / batch, 2)
        res["sampling"].append(info)
        latents = lat if lat is not None else torch.randn((batch, *policy.latent_shape()))

    save(res)
    # 2. The VAE both ways (decode: every generated video; encode: real videos for the NLL term).
    res["vae"] = {}
    for tiling in (True,) if only_real else (True, False):
        policy.codec.vae.enable_tiling() if tiling else policy.codec.vae.disable_tiling()
        frames, info = _oom_safe(clock, lambda: policy.codec.decode(latents[:1].to(device)))
        res["vae"][f"decode_tiling_{tiling}"] = info
        if frames is not None:
            video = frames
        _, info = _oom_safe(clock, lambda: policy.codec.encode(video))
        res["vae"][f"encode_tiling_{tiling}"] = info
    policy.codec.vae.enable_tiling()

    save(res)
    # 3. The trainer's DPO micro-batch (pairs, reference forward, optional real video): LoRA, then full.
    res["train"] = []
    shape = list(policy.latent_shape())
    x = latents[:1].float().cpu().numpy()[0]
    real = {"frames": video, "prompt": [PROMPT]}
    policy.setup_finetune()
    policy.to(device).train_params_float32()
    trainable = [p for p in policy.transformer.parameters() if p.requires_grad]
    res["lora"] = {"rank": cfg.model.lora.rank, "trainable_m": round(sum(p.numel() for p in trainable) / 1e6, 2),
                   "trainable_dtypes": sorted({str(p.dtype) for p in trainable}),
                   "frozen_dtypes": sorted({str(p.dtype) for p in policy.transformer.parameters() if not p.requires_grad})}
    variants = [(False, 1, False), (True, 1, False), (True, 2, False), (True, 1, True)]
    for gc, pairs, with_real in [v for v in variants if v[2]] if only_real else variants:
        res["train"].append(train_steps_info(policy, cfg, device, clock, x, shape, real, gc, pairs, with_real,
                                             train_steps))
        save(res)
    # The real clip's latents encoded at every step (the cache off), for comparison with the row above.
    off = cfg.model_copy(update={"train": cfg.train.model_copy(update={"real_latent_cache": 0})})
    res["train"].append(train_steps_info(policy, off, device, clock, x, shape, real, True, 1, True, train_steps))
    save(res)
    if only_real:
        return res

    # 4. What a weight sync ships (LoRA only) and how long (de)serialising it takes.
    state, s_get, _ = clock.run(policy.policy_state)
    buf = io.BytesIO()
    _, s_save, _ = clock.run(lambda: torch.save(state, buf))
    nbytes = buf.tell()
    buf.seek(0)
    loaded = torch.load(buf, weights_only=True)
    _, s_load, _ = clock.run(lambda: policy.load_policy_state(loaded))
    res["weight_sync"] = {"tensors": len(state), "bytes": nbytes, "mib": round(nbytes / 2**20, 1),
                          "gather_s": s_get, "serialise_s": s_save, "load_s": s_load}
    save(res)

    # 5. Full fine-tuning: float32 master weights + AdamW state, a frozen bf16 reference copy.
    policy = state = loaded = None  # free the LoRA model before building the full one
    clock.reset_peak()
    policy, cfg = build(size, device, dtype)
    policy.cfg = policy.cfg.model_copy(update={"finetune": "full"})
    cfg = cfg.model_copy(update={"model": policy.cfg})
    policy.setup_finetune().to(device).train_params_float32()
    res["full_finetune"] = train_steps_info(policy, cfg, device, clock, x, shape, real, True, 1, False, train_steps)
    return res


def train_steps_info(policy, cfg, device, clock, x, shape, real, gc, pairs, with_real, steps) -> dict:
    """Time ``steps`` optimizer steps of the trainer's ``PreferenceStep`` on ``pairs`` DPO pairs."""
    trainable = [p for p in policy.transformer.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=cfg.train.lr)
    step_fn = PreferenceStep(policy, policy.transformer, cfg, device)
    rng = np.random.default_rng(0)
    rej = [(x + 0.1 * rng.standard_normal(x.shape)).astype(np.float32) for _ in range(pairs)]
    batch = {"row_id": np.array([f"pair-{i}" for i in range(pairs)], object),
             "latent_shape": np.array([shape] * pairs, object), "latent_dtype": np.array(["float32"] * pairs, object),
             "prompt": np.array([PROMPT] * pairs, object), "latents": np.array([encode_latents(x)] * pairs, object),
             "latents_l": np.array([encode_latents(r) for r in rej], object)}
    base = policy.trainable_base()
    base.enable_gradient_checkpointing() if gc else base.disable_gradient_checkpointing()
    videos = 2 * pairs + (1 if with_real else 0)
    info = {"finetune": policy.cfg.finetune, "gradient_checkpointing": gc, "pairs": pairs,
            "real_video_nll": with_real, "real_latent_cache": cfg.train.real_latent_cache if with_real else None,
            "videos_per_forward": videos,
            "trainable_m": round(sum(p.numel() for p in trainable) / 1e6, 1)}

    def one_step(i):
        loss, metrics = step_fn(batch, real if with_real else None, np.array([True] * pairs), i)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, cfg.train.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return metrics

    _, warm = _oom_safe(clock, lambda: one_step(0))
    if "error" in warm:
        info.update(warm)
    else:
        metrics, timed = _oom_safe(clock, lambda: [one_step(i + 1) for i in range(steps)])
        info.update(timed)
        if "seconds" in timed:
            info["s_per_step"] = round(timed["seconds"] / steps, 3)
            info["s_per_pair"] = round(timed["seconds"] / steps / pairs, 3)
            info["loss"] = round(float(metrics[-1]["loss"]), 5)
    opt.zero_grad(set_to_none=True)
    return info


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=["full", "tiny"], default="full")
    ap.add_argument("--sample-steps", type=int, default=50)
    ap.add_argument("--train-steps", type=int, default=3)
    ap.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16")
    ap.add_argument("--only-real", action="store_true", help="only the real-video NLL steps (cache on / off)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    out = Path(a.out)
    res = measure(a.size, a.sample_steps, a.train_steps, save=lambda r: out.write_text(json.dumps(r, indent=2)),
                  dtype=a.dtype, only_real=a.only_real)
    out.write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()
