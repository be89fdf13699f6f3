"""The preference objective for one micro-batch, with no Ray in it (DESIGN §3).

``PreferenceStep`` turns a batch of training rows (chosen / rejected latents or single rows, the
real-video batch) into per-sample errors of the policy and the reference that share ``t`` and noise,
and the configured objective (IPO's DPO or KTO totals, RWR, best-of-N SFT). The Ray Train worker
loop (``ipo_ray.trainer``) calls it; so do the in-process probe and the GPU real-size benchmark,
which run where Ray is not installed.
"""

from __future__ import annotations

import hashlib
import zlib
from collections import OrderedDict

import numpy as np
import torch

from .config import Config
from .losses import ipo_dpo_objective, ipo_kto_objective, nll_loss, rwr_loss, rwr_weights
from .policy import T2VPolicy
from .pretrain import high_noise_timesteps
from .rows import decode_latents


def _latents(col, shapes, dtypes) -> torch.Tensor:
    return torch.from_numpy(np.stack([decode_latents(b, s, d) for b, s, d in zip(col, shapes, dtypes)]).copy())


def _row_noise(row_ids, shape, step: int, seed: int, high_noise_fraction: float = 0.0, num_train_timesteps: int = 1000):
    """Per-row t and noise, reproducible from the row id and step; chosen and rejected share them.
    ``high_noise_fraction`` of the rows draw t from the upper half of the schedule instead."""
    ts, ns = [], []
    for rid in row_ids:
        g = torch.Generator().manual_seed((hash_id(rid) + 7919 * step + seed) % (2**63 - 1))
        ns.append(torch.randn(shape, generator=g))
        t = torch.randint(0, num_train_timesteps, (1,), generator=g)
        ts.append(high_noise_timesteps(t, high_noise_fraction, num_train_timesteps, generator=g))
    return torch.cat(ts), torch.stack(ns)


def hash_id(s: str) -> int:
    return zlib.crc32(s.encode()) * 1000003 + zlib.adler32(s.encode())


class PreferenceStep:
    """One micro-batch: per-sample errors of policy and reference, the configured objective."""

    def __init__(self, policy: T2VPolicy, model: torch.nn.Module, cfg: Config, device):
        self.policy, self.model, self.cfg, self.device = policy, model, cfg, device
        self.num_train_timesteps = policy.scheduler.config.num_train_timesteps
        self.real_cache: OrderedDict[bytes, torch.Tensor] = OrderedDict()  # clip digest -> latents (CPU)
        self.real_encoded = 0

    def encode_real(self, frames: np.ndarray) -> torch.Tensor:
        """Latents of the real clips. A VAE encodes each clip once and its latents are reused while
        ``train.real_latent_cache`` holds them (one posterior sample per clip, as latent caching in
        diffusion fine-tuning does): the encode was half of a real-size step (benchmarks/RESULTS.md)."""
        codec, cap = self.policy.codec, self.cfg.train.real_latent_cache
        if codec.kind == "identity" or cap == 0:
            self.real_encoded += len(frames)
            return codec.encode(frames).to(self.device)
        keys = [hashlib.blake2b(np.ascontiguousarray(f).tobytes(), digest_size=16).digest() for f in frames]
        todo = [i for i, k in enumerate(keys) if k not in self.real_cache]
        if todo:
            z = codec.encode(np.stack([frames[i] for i in todo])).cpu()
            self.real_encoded += len(todo)
            for i, zi in zip(todo, z):
                self.real_cache[keys[i]] = zi
        out = torch.stack([self.real_cache[k] for k in keys])
        for k in keys:
            self.real_cache.move_to_end(k)
        while len(self.real_cache) > cap:
            self.real_cache.popitem(last=False)
        return out.to(self.device)

    def errors(self, x0, prompts, t, noise, with_ref: bool):
        cond = self.policy.encode_prompts(prompts)
        err = self.policy.training_error(x0, cond, t, noise, model=self.model)
        ref = None
        if with_ref:
            with torch.no_grad(), self.policy.reference() as ref_net:
                ref = self.policy.training_error(x0, cond, t, noise, model=ref_net)
        return err, ref

    def __call__(self, batch: dict, real: dict | None, valid: np.ndarray, step: int):
        a, dev = self.cfg.algo, self.device
        n = len(batch["row_id"])
        shape = tuple(int(s) for s in batch["latent_shape"][0])
        t, noise = _row_noise(list(batch["row_id"]), shape, step, self.cfg.train.seed,
                              self.cfg.train.high_noise_fraction, self.num_train_timesteps)
        t = t.to(dev)
        noise = noise.to(dev)
        x = _latents(batch["latents"], batch["latent_shape"], batch["latent_dtype"]).to(dev)
        prompts = [str(p) for p in batch["prompt"]]
        parts_x, parts_p, parts_t, parts_n = [x], list(prompts), [t], [noise]
        if a.name == "dpo":
            x_l = _latents(batch["latents_l"], batch["latent_shape"], batch["latent_dtype"]).to(dev)
            parts_x.append(x_l)
            parts_p += prompts
            parts_t.append(t)
            parts_n.append(noise)
        n_real = 0
        if real is not None:
            xr = self.encode_real(real["frames"])
            n_real = xr.shape[0]
            nr, tr = self.policy.sample_noise_and_t(n_real)
            parts_x.append(xr)
            parts_p += list(real["prompt"])
            parts_t.append(tr)
            parts_n.append(nr)
        # One forward through the (DDP/FSDP) model for everything: rows, rejected, real videos.
        err, ref = self.errors(torch.cat(parts_x), parts_p, torch.cat(parts_t), torch.cat(parts_n),
                               with_ref=a.name in ("dpo", "kto"))
        m = torch.from_numpy(valid).to(dev)
        keep = m.nonzero().flatten()
        if keep.numel() == 0:  # every row stale: keep the collective pattern, train on nothing
            keep, scale = torch.arange(n, device=dev), 0.0
        else:
            scale = 1.0
        err_real = err[-n_real:] if n_real else None
        lam = a.nll_weights()
        if a.name == "dpo":
            loss, metrics = ipo_dpo_objective(err[:n][keep], err[n:2 * n][keep], ref[:n][keep], ref[n:2 * n][keep],
                                              a.beta, err_real, lam["lambda_chosen"], lam["lambda_real"])
        elif a.name == "kto":
            des = torch.as_tensor(np.asarray(batch["desirable"], bool), device=dev)
            loss, metrics = ipo_kto_objective(err[:n][keep], ref[:n][keep], des[keep], a.beta, err_real,
                                              lam["lambda_real"], a.lambda_desirable, a.lambda_undesirable,
                                              a.kto_balance, lam["kto_nll_desirable"])
        else:  # rwr / sft (best-of-N): reward-weighted denoising loss
            shaping = "best_of_n" if a.name == "sft" else a.rwr_shaping
            w = rwr_weights(torch.as_tensor(np.asarray(batch["reward"], np.float32)), shaping, a.rwr_temperature,
                            threshold=a.desirable_threshold).to(dev)
            loss, metrics = rwr_loss(err[:n][keep], w[keep])
            if err_real is not None and lam["lambda_real"] > 0:
                nll_r, _ = nll_loss(err_real)
                loss = loss + lam["lambda_real"] * nll_r
                metrics["nll_real"] = float(nll_r.detach())
            metrics["loss"] = float(loss.detach())
        return loss * scale, metrics
