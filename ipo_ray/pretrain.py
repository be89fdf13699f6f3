"""Pretrain the tiny world base on rendered videos (DESIGN §5).

Real T2V models get within-prompt diversity from noisy web data: the same caption over clips that
do and do not show it. The world does the same: a ``flawed_fraction`` of training clips carry one
failure mode (reversed motion, vanishing object, wrong color, frozen frames, wrong shape) under the
correct caption. The base then succeeds on some seeds of a prompt and fails on others, which is
what preference optimisation can sharpen.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .codec import frames_to_unit
from .config import Config
from .policy import T2VPolicy
from .tokenizer import build_world_tokenizer
from .world import render, splits


def prompt_probs(prompts: list[str], word_weights: dict[str, float]) -> np.ndarray:
    """Sampling probability of each prompt: the product of its words' weights (1 for unlisted words), normalised."""
    w = np.array([math.prod(word_weights.get(word, 1.0) for word in p.split()) for p in prompts], np.float64)
    return w / w.sum()


def draw_prompts(rng: np.random.Generator, prompts: list[str], n: int, word_weights: dict[str, float]) -> list[str]:
    """``n`` prompts drawn with replacement by :func:`prompt_probs` (uniformly, the original random stream,
    when no word is weighted, so earlier pretraining stages stay reproducible)."""
    idx = rng.choice(len(prompts), size=n, p=prompt_probs(prompts, word_weights)) if word_weights \
        else rng.integers(len(prompts), size=n)
    return [prompts[i] for i in idx]


def world_batch(rng: np.random.Generator, prompts: list[str], n: int, cfg: Config,
                flawed_fraction: float) -> tuple[list[str], np.ndarray]:
    """``n`` (prompt, video) training clips, prompts drawn by ``pretrain.word_weights``; a fraction carry a
    flaw from ``pretrain.flaws`` under the correct caption."""
    m, pc = cfg.model, cfg.pretrain
    chosen = draw_prompts(rng, prompts, n, pc.word_weights)
    videos = []
    for p in chosen:
        flaw = pc.flaws[rng.integers(len(pc.flaws))] if rng.random() < flawed_fraction else None
        videos.append(render(p, int(rng.integers(2**31)), m.frames, m.height, m.width, flaw=flaw))
    return chosen, np.stack(videos) if videos else np.zeros((0, m.frames, m.height, m.width, 3), np.uint8)


def swap_shape(prompt: str) -> str:
    """The caption with its first object's shape word swapped (square <-> circle)."""
    k, word = min((prompt.find(s), s) for s in ("square", "circle") if s in prompt)
    return prompt[:k] + ("circle" if word == "square" else "square") + prompt[k + len(word):]


def shape_pairs_batch(rng: np.random.Generator, prompts: list[str], pairs: int, cfg: Config):
    """``pairs`` contrast pairs: one scene drawn with each shape, each under its own caption, and the mask of
    pixels where the two differ (``[2 * pairs, F, H, W]``). Only prompts whose swapped caption is also a train
    prompt are used, so no held-out combination is ever shown."""
    m = cfg.model
    allowed = set(prompts)
    pairable = [p for p in prompts if swap_shape(p) in allowed]
    chosen, videos, masks = [], [], []
    for p in draw_prompts(rng, pairable, pairs, cfg.pretrain.word_weights):
        seed = int(rng.integers(2**31))
        a = render(p, seed, m.frames, m.height, m.width)
        b = render(p, seed, m.frames, m.height, m.width, flaw="wrong_shape")
        diff = (a != b).any(axis=-1)
        chosen += [p, swap_shape(p)]
        videos += [a, b]
        masks += [diff, diff]
    return chosen, np.stack(videos), np.stack(masks)


def high_noise_timesteps(t: torch.Tensor, fraction: float, num_train_timesteps: int,
                         generator: torch.Generator | None = None) -> torch.Tensor:
    """Redraw a ``fraction`` of the timesteps from the upper half of the schedule. What a clip shows
    (which way the object goes, its shape) is decided at high noise, where the prompt is the only
    information; uniform timesteps spend most of the budget on low-noise detail."""
    if fraction <= 0:
        return t
    redraw = torch.rand(t.shape, generator=generator) < fraction
    high = torch.randint(num_train_timesteps // 2, num_train_timesteps, t.shape, generator=generator)
    return torch.where(redraw.to(t.device), high.to(t.device), t)


def adopt_world_tokenizer(policy: T2VPolicy, log=print) -> None:
    """Continue a base saved with an older world tokenizer: words keep their embedding rows, each new
    token (a merged phrase) starts at the mean of its words' rows plus a little noise."""
    new = build_world_tokenizer()
    old_vocab, new_vocab = policy.tokenizer.get_vocab(), new.get_vocab()
    if old_vocab == new_vocab:
        return
    old_rows = policy.text_encoder.get_input_embeddings().weight.detach().clone()
    policy.text_encoder.resize_token_embeddings(len(new_vocab), mean_resizing=False)
    emb = policy.text_encoder.get_input_embeddings().weight
    with torch.no_grad():
        for tok, i in new_vocab.items():
            if tok in old_vocab:
                emb[i] = old_rows[old_vocab[tok]]
            else:
                parts = [old_vocab[w] for w in tok.split("-") if w in old_vocab]
                emb[i] = old_rows[parts].mean(0) + 0.1 * old_rows.std() * torch.randn(emb.shape[1]) \
                    if parts else torch.randn(emb.shape[1]) * old_rows.std()
    policy.tokenizer = new
    policy._null_cond = None
    log(f"pretrain: text encoder moved to the current world tokenizer ({len(old_vocab)} -> {len(new_vocab)} tokens)")


def batch_loss(policy: T2VPolicy, rng: np.random.Generator, train_prompts: list[str], cfg: Config) -> torch.Tensor:
    """One pretraining batch's loss: world clips (a ``flawed_fraction`` flawed), ``shape_pairs`` contrast
    pairs with ``shape_weight`` on the pixels where a pair differs, text dropout, timesteps tilted to high noise."""
    pc, device = cfg.pretrain, policy.device
    prompts, videos = world_batch(rng, train_prompts, pc.batch_size - 2 * pc.shape_pairs, cfg, pc.flawed_fraction)
    weight = None
    if pc.shape_pairs:
        p2, v2, diff = shape_pairs_batch(rng, train_prompts, pc.shape_pairs, cfg)
        prompts, videos = prompts + p2, np.concatenate([videos, v2])
        mask = np.concatenate([np.zeros((len(videos) - len(v2), *diff.shape[1:]), bool), diff])
        weight = (1.0 + pc.shape_weight * torch.from_numpy(mask).float()[:, :, None]).to(device)  # [B, F, 1, H, W]
    prompts = ["" if rng.random() < pc.text_dropout else p for p in prompts]
    x0 = frames_to_unit(videos).to(device)
    cond = policy.encode_prompts_trainable(prompts)
    noise, t = policy.sample_noise_and_t(len(prompts))
    t = high_noise_timesteps(t, pc.high_noise_fraction, policy.scheduler.config.num_train_timesteps)
    return policy.training_error(x0, cond, t, noise, weight=weight).mean()


def grow_transformer(transformer, extra: int):
    """A copy of ``transformer`` with ``extra`` more blocks: the old blocks keep their order and weights, a new
    block goes after every ``num_layers // extra``-th old one, and each new block's residual gates (image and
    text, attention and MLP; adaLN-zero) start at zero, so the grown model computes exactly what the old one
    did and only adds capacity. Returns the model and the block order (old index, or None for a new block)."""
    from diffusers import CogVideoXTransformer3DModel

    n = transformer.config.num_layers
    every = max(1, n // extra)
    order: list[int | None] = []
    for j in range(n):
        order.append(j)
        if order.count(None) < extra and (j + 1) % every == 0:
            order.append(None)
    order += [None] * (extra - order.count(None))
    grown = CogVideoXTransformer3DModel.from_config({**transformer.config, "num_layers": n + extra})
    state = {k: v for k, v in transformer.state_dict().items() if not k.startswith("transformer_blocks.")}
    for i, j in enumerate(order):
        if j is not None:
            state.update({f"transformer_blocks.{i}.{k}": v for k, v in transformer.transformer_blocks[j].state_dict().items()})
    missing = grown.load_state_dict(state, strict=False).missing_keys
    assert all(k.startswith("transformer_blocks.") for k in missing), missing
    d = grown.config.num_attention_heads * grown.config.attention_head_dim
    with torch.no_grad():
        for i in (i for i, j in enumerate(order) if j is None):
            for norm in (grown.transformer_blocks[i].norm1, grown.transformer_blocks[i].norm2):
                for c in (2, 5):  # chunks of the adaLN linear: shift, scale, gate, enc_shift, enc_scale, enc_gate
                    norm.linear.weight[c * d:(c + 1) * d] = 0
                    norm.linear.bias[c * d:(c + 1) * d] = 0
    dtype = next(transformer.parameters()).dtype
    return (grown if dtype == torch.float32 else grown.to(dtype)), order


def pretrain(cfg: Config, out: str | Path | None = None, log=print) -> Path:
    """Train a fresh tiny base; writes a diffusers-format checkpoint to ``out`` and returns it."""
    pc = cfg.pretrain
    out = Path(out or pc.out)
    torch.manual_seed(pc.seed)
    rng = np.random.default_rng(pc.seed)
    policy = T2VPolicy.from_pretrained(pc.init_from) if pc.init_from else T2VPolicy.build_tiny(cfg.model)
    if pc.init_from:
        adopt_world_tokenizer(policy, log)
    if pc.grow_layers:
        policy.transformer, order = grow_transformer(policy.transformer, pc.grow_layers)
        tiny = policy.cfg.tiny.model_copy(update={"num_layers": policy.transformer.config.num_layers})
        policy.cfg = policy.cfg.model_copy(update={"tiny": tiny})
        log(f"pretrain: transformer grown to {len(order)} blocks (new blocks start as identities): {order}")
    device = torch.device("cuda" if pc.device == "cuda" or (pc.device == "auto" and torch.cuda.is_available()) else "cpu")
    policy.to(device)
    policy.text_encoder.requires_grad_(True).train()
    # An exponential moving average of the weights samples much cleaner than the raw weights
    # (standard for diffusion models); the checkpoint holds the EMA.
    ema = torch.optim.swa_utils.AveragedModel(
        torch.nn.ModuleList([policy.transformer, policy.text_encoder]),
        multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(pc.ema_decay)) if pc.ema_decay > 0 else None
    params = list(policy.transformer.parameters()) + list(policy.text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=pc.lr, weight_decay=0.0)
    warmup = min(200, pc.steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, warmup)) * (
        0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, s / pc.steps)))))
    train_prompts = splits()["train"]
    start, losses = time.time(), []
    bar = tqdm(range(pc.steps), desc="pretrain", mininterval=5)
    step = 0
    for step in bar:
        loss = batch_loss(policy, rng, train_prompts, cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        if ema is not None:
            ema.update_parameters(torch.nn.ModuleList([policy.transformer, policy.text_encoder]))
        losses.append(loss.item())
        if step % 50 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
        if (time.time() - start) / 60.0 > pc.max_minutes:
            log(f"pretrain: time budget of {pc.max_minutes} min reached at step {step + 1}")
            break
    if ema is not None:
        policy.transformer.load_state_dict(ema.module[0].state_dict())
        policy.text_encoder.load_state_dict(ema.module[1].state_dict())
    policy.text_encoder.eval().requires_grad_(False)
    policy.to("cpu").save(out)
    prev = {}
    if pc.init_from and (Path(pc.init_from) / "pretrain_info.json").is_file():
        prev = json.loads((Path(pc.init_from) / "pretrain_info.json").read_text())
    info = {"steps": step + 1, "minutes": (time.time() - start) / 60.0, "final_loss": float(np.mean(losses[-100:])),
            "params": policy.num_parameters(), "flawed_fraction": pc.flawed_fraction, "seed": pc.seed,
            "batch_size": pc.batch_size, "lr": pc.lr, "ema_decay": pc.ema_decay, "high_noise_fraction": pc.high_noise_fraction,
            "shape_pairs": pc.shape_pairs, "shape_weight": pc.shape_weight, "grow_layers": pc.grow_layers,
            "flaws": list(pc.flaws), "word_weights": dict(pc.word_weights),
            "total_steps": step + 1 + prev.get("total_steps", prev.get("steps", 0)),
            "total_minutes": (time.time() - start) / 60.0 + prev.get("total_minutes", prev.get("minutes", 0.0)),
            "init_from": pc.init_from, "device": str(device)}
    (out / "pretrain_info.json").write_text(json.dumps(info, indent=2))
    log(f"pretrain: wrote {out} ({info['steps']} steps, {info['minutes']:.1f} min, loss {info['final_loss']:.4f})")
    return out
