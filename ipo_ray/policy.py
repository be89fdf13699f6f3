"""``T2VPolicy``: one adapter over diffusers for sampling, the per-sample training error, LoRA,
the reference model, and save/load (DESIGN §2).

The same class serves the tiny pixel-space world model (``CogVideoXTransformer3DModel`` and a T5
encoder built from small configs, an identity codec, a word-level tokenizer built here) and a real
CogVideoX checkpoint loaded with ``from_pretrained`` (T5 tokenizer/encoder, the VAE, the shipped
scheduler).
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import json
from pathlib import Path

import numpy as np
import torch
from diffusers import CogVideoXTransformer3DModel, DDIMScheduler
from transformers import AutoTokenizer, T5Config, T5EncoderModel

from .codec import IdentityCodec, VAECodec
from .config import ModelConfig
from .tokenizer import build_world_tokenizer

POLICY_FILE = "ipo_ray_policy.json"
RUN_CHOICES = ("finetune", "lora", "dtype", "gradient_checkpointing", "vae_tiling")  # the run's, not the checkpoint's


def build_tiny_components(cfg: ModelConfig):
    """Fresh random tiny world components from config (nothing downloaded)."""
    t = cfg.tiny
    tokenizer = build_world_tokenizer()
    tokenizer.model_max_length = t.max_text_len
    text_encoder = T5EncoderModel(T5Config(
        vocab_size=len(tokenizer), d_model=t.text_dim, d_kv=max(4, t.text_dim // 2), d_ff=t.text_dim * 2,
        num_layers=t.text_layers, num_heads=2, dropout_rate=0.0, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=0))
    transformer = CogVideoXTransformer3DModel(
        num_attention_heads=t.num_attention_heads, attention_head_dim=t.attention_head_dim,
        in_channels=3, out_channels=3, time_embed_dim=t.time_embed_dim, text_embed_dim=t.text_dim,
        num_layers=t.num_layers, sample_width=cfg.width, sample_height=cfg.height, sample_frames=cfg.frames,
        patch_size=t.patch_size, temporal_compression_ratio=1, max_text_seq_length=t.max_text_len,
        use_rotary_positional_embeddings=False)
    scheduler = DDIMScheduler(num_train_timesteps=cfg.num_train_timesteps, beta_schedule="squaredcos_cap_v2",
                              prediction_type=cfg.prediction_type, clip_sample=True, set_alpha_to_one=True,
                              timestep_spacing="trailing")
    return transformer, text_encoder, tokenizer, scheduler, IdentityCodec()


class T2VPolicy:
    """A text-to-video diffusion policy: transformer (trainable), frozen text encoder, codec."""

    def __init__(self, transformer, text_encoder, tokenizer, scheduler, codec, cfg: ModelConfig):
        self.transformer = transformer
        self.text_encoder = text_encoder.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.scheduler = scheduler
        self.codec = codec
        self.cfg = cfg
        self.reference_model: torch.nn.Module | None = None  # full fine-tuning: a frozen copy
        self.device = torch.device("cpu")
        self._null_cond: torch.Tensor | None = None

    # ------------------------------------------------------------------ construction / IO
    @classmethod
    def build_tiny(cls, cfg: ModelConfig) -> "T2VPolicy":
        return cls(*build_tiny_components(cfg), cfg=cfg)

    @classmethod
    def from_pretrained(cls, path: str, cfg: ModelConfig | None = None, dtype=None) -> "T2VPolicy":
        """Load a saved world policy (ours) or a diffusers CogVideoX checkpoint (path or hub id), every
        module in ``dtype`` (default: the config's ``model.dtype``; trainable weights are made float32
        later by ``train_params_float32``)."""
        marker = Path(path) / POLICY_FILE
        if marker.is_file():
            meta = json.loads(marker.read_text())
            mcfg = ModelConfig.model_validate(meta["model"])
            if cfg is not None:  # keep the run's fine-tuning choices, the checkpoint's sizes
                mcfg = mcfg.model_copy(update={k: getattr(cfg, k) for k in RUN_CHOICES})
            tokenizer = AutoTokenizer.from_pretrained(path, subfolder="tokenizer")
            codec_kind = meta["codec"]
        else:
            if cfg is None:
                raise ValueError(f"{path}: not an ipo-ray checkpoint; pass the model config for a diffusers model")
            mcfg, codec_kind = cfg, "vae"
            tokenizer = AutoTokenizer.from_pretrained(path, subfolder="tokenizer", revision=cfg.revision)
        dtype = dtype or getattr(torch, mcfg.dtype)
        codec = IdentityCodec() if codec_kind == "identity" else VAECodec.from_pretrained(path, dtype, mcfg.vae_tiling)
        transformer = CogVideoXTransformer3DModel.from_pretrained(path, subfolder="transformer", torch_dtype=dtype)
        text_encoder = T5EncoderModel.from_pretrained(path, subfolder="text_encoder", torch_dtype=dtype)
        sched_cls = DDIMScheduler
        sched_cfg = json.loads((Path(path) / "scheduler" / "scheduler_config.json").read_text()) \
            if (Path(path) / "scheduler").is_dir() else None
        if sched_cfg and sched_cfg.get("_class_name", "DDIMScheduler") != "DDIMScheduler":
            import diffusers

            sched_cls = getattr(diffusers, sched_cfg["_class_name"])
        scheduler = sched_cls.from_pretrained(path, subfolder="scheduler")
        return cls(transformer, text_encoder, tokenizer, scheduler, codec, mcfg)

    def save(self, path: str | Path, transformer_only: bool = False) -> None:
        """Write a diffusers-format directory (``transformer/``, ``text_encoder/``, ...)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.trainable_base().save_pretrained(path / "transformer")
        if transformer_only:
            return
        self.text_encoder.save_pretrained(path / "text_encoder")
        self.tokenizer.save_pretrained(path / "tokenizer")
        self.scheduler.save_pretrained(path / "scheduler")
        meta = {"model": self.cfg.model_dump(mode="json"), "codec": self.codec.kind}
        (path / POLICY_FILE).write_text(json.dumps(meta, indent=2))

    def to(self, device) -> "T2VPolicy":
        self.device = torch.device(device)
        self.transformer.to(self.device)
        self.text_encoder.to(self.device)
        self.codec.to(self.device)
        if self.reference_model is not None:
            self.reference_model.to(self.device)
        self._null_cond = None
        return self

    # ------------------------------------------------------------------ fine-tuning setup
    def setup_finetune(self) -> "T2VPolicy":
        """LoRA (reference = adapters disabled) or full (reference = a frozen copy)."""
        if self.cfg.gradient_checkpointing:
            self.trainable_base().enable_gradient_checkpointing()
        if self.cfg.finetune == "lora":
            from peft import LoraConfig, get_peft_model

            lc = self.cfg.lora
            present = {n.split(".")[-1] for n, _ in self.transformer.named_modules()}
            targets = [m for m in lc.target_modules if m.split(".")[-1] in present]
            self.transformer.requires_grad_(False)
            self.transformer = get_peft_model(self.transformer, LoraConfig(
                r=lc.rank, lora_alpha=lc.alpha, target_modules=targets, init_lora_weights=True))
        else:
            self.reference_model = copy.deepcopy(self.transformer).eval().requires_grad_(False)
        return self

    def train_params_float32(self) -> "T2VPolicy":
        """Trainable weights in float32, frozen ones stay in ``model.dtype``: a bfloat16 weight has 8
        mantissa bits, so an Adam step of lr 1e-5 on a weight of 1e-2 would round away. The forward
        then runs under bfloat16 autocast (``training_error``)."""
        for p in self.transformer.parameters():
            if p.requires_grad and p.dtype != torch.float32:
                p.data = p.data.float()
        return self

    @property
    def is_lora(self) -> bool:
        return hasattr(self.transformer, "disable_adapter")

    def trainable_base(self) -> torch.nn.Module:
        return self.transformer.get_base_model() if self.is_lora else self.transformer

    def _lora_params(self) -> dict[str, torch.nn.Parameter]:
        return {n: p for n, p in self.transformer.named_parameters() if "lora_" in n}

    @contextlib.contextmanager
    def reference(self):
        """Context (use under ``torch.no_grad()``) yielding the reference network.

        Full fine-tuning: the frozen copy. LoRA: the base with adapters disabled until the reference
        first moves; after that, the same network with the adapter weights swapped for the ones
        saved at the move, and swapped back on exit (the base stays shared and frozen, so a
        weight sync still ships only the adapters)."""
        if not self.is_lora:
            yield self.reference_model if self.reference_model is not None else self.transformer
        elif getattr(self, "_lora_reference", None) is None:
            with self.transformer.disable_adapter():
                yield self.transformer
        else:
            params = self._lora_params()
            with torch.no_grad():
                current = {n: p.detach().clone() for n, p in params.items()}
                for n, p in params.items():
                    p.data.copy_(self._lora_reference[n])
            try:
                yield self.transformer
            finally:
                with torch.no_grad():
                    for n, p in params.items():
                        p.data.copy_(current[n])

    def policy_state(self) -> dict[str, torch.Tensor]:
        """What a weight sync ships: LoRA tensors only when training LoRA, else all weights."""
        if self.is_lora:
            from peft import get_peft_model_state_dict

            return {k: v.detach().cpu() for k, v in get_peft_model_state_dict(self.transformer).items()}
        return {k: v.detach().cpu() for k, v in self.transformer.state_dict().items()}

    def load_policy_state(self, state: dict[str, torch.Tensor]) -> None:
        if self.is_lora:
            from peft import set_peft_model_state_dict

            set_peft_model_state_dict(self.transformer, state)
        else:
            self.transformer.load_state_dict(state)

    def move_reference(self, state: dict[str, torch.Tensor] | None = None) -> None:
        """The reference becomes the current policy (IPO: at the start of every round). ``state``:
        the current policy's full (unsharded) weights when the caller already has them."""
        if self.is_lora:
            self._lora_reference = {n: p.detach().clone() for n, p in self._lora_params().items()}
        elif self.reference_model is not None:
            self.reference_model.load_state_dict(state if state is not None else self.transformer.state_dict())

    # ------------------------------------------------------------------ text
    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        tok = self.tokenizer(list(prompts), padding="max_length", truncation=True,
                             max_length=self._text_len(), return_tensors="pt")
        with torch.no_grad():
            out = self.text_encoder(input_ids=tok.input_ids.to(self.device)).last_hidden_state
        return out.to(self.trainable_base().dtype)

    def encode_prompts_trainable(self, prompts: list[str]) -> torch.Tensor:
        """Text encoding with gradients (pretraining trains the tiny text encoder jointly)."""
        tok = self.tokenizer(list(prompts), padding="max_length", truncation=True,
                             max_length=self._text_len(), return_tensors="pt")
        return self.text_encoder(input_ids=tok.input_ids.to(self.device)).last_hidden_state

    def _text_len(self) -> int:
        return int(self.trainable_base().config.max_text_seq_length)

    def null_cond(self, n: int) -> torch.Tensor:
        if self._null_cond is None:
            self._null_cond = self.encode_prompts([""])
        return self._null_cond.expand(n, -1, -1)

    # ------------------------------------------------------------------ diffusion
    def latent_shape(self) -> tuple[int, int, int, int]:
        c = self.cfg
        if self.codec.kind == "identity":
            return (c.frames, 3, c.height, c.width)
        return ((c.frames - 1) // 4 + 1, self.codec.latent_channels, c.height // 8, c.width // 8)

    def training_target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.scheduler.config.prediction_type == "v_prediction":
            return self.scheduler.get_velocity(x0, noise, t)
        return noise

    def training_error(self, x0: torch.Tensor, cond: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
                       model: torch.nn.Module | None = None, weight: torch.Tensor | None = None) -> torch.Tensor:
        """Per-sample squared error ``err(model, x0, cond, t, noise)``: shape ``[B]``, the mean over
        every non-batch dim, against the scheduler's target (epsilon or v); ``weight`` (broadcastable to
        the latents) scales each element's error first."""
        net = model if model is not None else self.transformer
        xt = self.scheduler.add_noise(x0, noise, t)
        with torch.autocast(xt.device.type, dtype=torch.bfloat16, enabled=self.cfg.dtype == "bfloat16"):
            pred = net(hidden_states=xt, encoder_hidden_states=cond, timestep=t, return_dict=False)[0]
        target = self.training_target(x0, noise, t)
        err = (pred.float() - target.float()).pow(2)
        return (err if weight is None else err * weight).flatten(1).mean(dim=1)

    def sample_noise_and_t(self, n: int, generator: torch.Generator | None = None):
        noise = torch.randn((n, *self.latent_shape()), generator=generator)
        t = torch.randint(0, self.scheduler.config.num_train_timesteps, (n,), generator=generator)
        return noise.to(self.device), t.to(self.device)

    @torch.no_grad()
    def sample_latents(self, prompts: list[str], seeds: list[int], steps: int = 20,
                       guidance_scale: float = 2.0, net: torch.nn.Module | None = None) -> torch.Tensor:
        """Deterministic per seed: each sample's initial noise comes from its own generator."""
        if len(prompts) != len(seeds):
            raise ValueError("prompts and seeds must have the same length")
        net = net if net is not None else self.transformer
        dtype = self.trainable_base().dtype
        x = torch.stack([torch.randn(self.latent_shape(), generator=torch.Generator().manual_seed(int(s)))
                         for s in seeds]).to(self.device, dtype)
        cond = self.encode_prompts(prompts)
        n = len(prompts)
        sched = copy.deepcopy(self.scheduler)
        sched.set_timesteps(steps, device=self.device)
        use_cfg = guidance_scale > 1.0
        ctx = torch.cat([self.null_cond(n), cond]) if use_cfg else cond
        old_x0 = None
        step_kw = {"eta": 0.0} if "eta" in inspect.signature(sched.step).parameters else {}  # DDIM: deterministic
        for i, t in enumerate(sched.timesteps):
            inp = torch.cat([x, x]) if use_cfg else x
            tt = t.expand(inp.shape[0]).to(self.device)
            pred = net(hidden_states=inp, encoder_hidden_states=ctx, timestep=tt, return_dict=False)[0].float()
            if use_cfg:
                un, co = pred.chunk(2)
                pred = un + guidance_scale * (co - un)
            if type(sched).__name__ == "CogVideoXDPMScheduler":
                prev_t = sched.timesteps[i - 1] if i > 0 else None
                x, old_x0 = sched.step(pred, old_x0, t, prev_t, x.float(), return_dict=False)
            else:
                x = sched.step(pred, t, x.float(), **step_kw, return_dict=False)[0]
            x = x.to(dtype)
        return x.float()

    def sample(self, prompts: list[str], seeds: list[int], steps: int = 20, guidance_scale: float = 2.0):
        """Returns ``(frames uint8 [B, F, H, W, 3], latents float [B, F', C, H', W'])``."""
        latents = self.sample_latents(prompts, seeds, steps, guidance_scale)
        return self.codec.decode(latents), latents

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.trainable_base().parameters())


def seeds_for(prompt_index: int, k: int, base_seed: int = 0, round_: int = 0, repeat: int = 0) -> list[int]:
    """K distinct, reproducible seeds for a prompt in a round; ``repeat`` j > 0: the prompt's (j+1)-th group of
    the round (``loop.focus_explore``), other seeds (the first group's seeds do not depend on it)."""
    rng = np.random.default_rng([base_seed, round_, prompt_index] + ([repeat] if repeat else []))
    return [int(s) for s in rng.choice(2**31 - 1, size=k, replace=False)]
