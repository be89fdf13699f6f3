"""The one run configuration: a pydantic model loaded from YAML, with ``--set a.b=value`` overrides.

Validated once at the edge; errors are one line naming the field and what is allowed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from .world.grammar import vocabulary
from .world.render import FLAWS


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TinyModelConfig(_Strict):
    """Sizes of the pixel-space CogVideoX transformer and T5 text encoder built from config."""

    num_layers: int = Field(4, ge=1)
    num_attention_heads: int = Field(4, ge=1)
    attention_head_dim: int = Field(16, ge=4)
    time_embed_dim: int = Field(64, ge=8)
    patch_size: int = Field(2, ge=1)
    text_dim: int = Field(32, ge=8)
    text_layers: int = Field(2, ge=1)
    max_text_len: int = Field(16, ge=4)


class LoraConfig(_Strict):
    rank: int = Field(8, ge=1)
    alpha: float = Field(8.0, gt=0)
    target_modules: list[str] = ["to_q", "to_k", "to_v", "to_out.0", "proj", "ff.net.2"]


class ModelConfig(_Strict):
    source: Literal["world_base", "pretrained"] = "world_base"
    path: str | None = None  # diffusers dir or hub id (pretrained); base checkpoint dir (world_base)
    revision: str | None = None
    frames: int = Field(8, ge=1)
    height: int = Field(16, ge=4)
    width: int = Field(16, ge=4)
    prediction_type: Literal["epsilon", "v_prediction"] = "v_prediction"
    num_train_timesteps: int = Field(1000, ge=10)
    tiny: TinyModelConfig = TinyModelConfig()
    finetune: Literal["lora", "full"] = "full"
    lora: LoraConfig = LoraConfig()
    dtype: Literal["float32", "bfloat16"] = "float32"
    gradient_checkpointing: bool = Field(False, description="recompute the transformer blocks in backward: "
                                         "trades compute for activation memory (real-size models)")
    vae_tiling: bool = Field(True, description="encode/decode the VAE in spatial tiles (bounded memory at 480x720)")


class SamplingConfig(_Strict):
    num_per_prompt: int = Field(8, ge=2, description="K videos per prompt (distinct seeds)")
    steps: int = Field(20, ge=1, le=1000)
    guidance_scale: float = Field(2.0, ge=1.0, le=30.0)
    batch_size: int = Field(16, ge=1)
    dtype: Literal["float32", "bfloat16"] | None = Field(
        None, description="weights and activations of the copies that only sample (generator actors, eval, serve, "
        "report); training keeps model.dtype. None: model.dtype")


class PretrainConfig(_Strict):
    out: str = ".cache/world-base"
    steps: int = Field(3000, ge=1)
    max_minutes: float = Field(30.0, gt=0)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(1e-3, gt=0)
    flawed_fraction: float = Field(0.3, ge=0, le=1)
    text_dropout: float = Field(0.1, ge=0, le=1)
    high_noise_fraction: float = Field(0.0, ge=0, le=1, description="share of timesteps drawn from the upper half")
    ema_decay: float = Field(0.999, ge=0, lt=1, description="0 disables the EMA of weights")
    init_from: str | None = Field(None, description="continue from this base checkpoint instead of random init")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: cuda when available, else cpu")
    shape_pairs: int = Field(0, ge=0, description="contrast pairs per batch: one scene drawn as a square and as a "
                             "circle, each under its own caption (teaches the shape word)")
    shape_weight: float = Field(0.0, ge=0, description="extra loss weight on the pixels where a pair's two shapes differ")
    grow_layers: int = Field(0, ge=0, description="add this many transformer blocks to the init_from base, each "
                             "starting as an identity (zero residual gates): more capacity, same outputs at step 0")
    flaws: list[Literal[FLAWS]] = Field(
        list(FLAWS), min_length=1,
        description="the failure modes a flawed clip is drawn from (uniformly)")
    word_weights: dict[str, float] = Field({}, description="how often train prompts are drawn, by word: a prompt's "
                                           "weight is the product of its words' weights (e.g. {square: 2}); default 1")
    seed: int = 0

    @model_validator(mode="after")
    def _pairs_fit(self):
        vocab = vocabulary()
        for word, w in self.word_weights.items():
            if word not in vocab:
                raise PydanticCustomError("pretrain", "pretrain.word_weights: unknown word '{w}'; allowed: {v}",
                                          {"w": word, "v": ", ".join(vocab)})
            if not w > 0:
                raise PydanticCustomError("pretrain", "pretrain.word_weights: weight of '{w}' must be > 0 (got {x})",
                                          {"w": word, "x": w})
        if self.grow_layers and not self.init_from:
            raise PydanticCustomError("pretrain", "pretrain.grow_layers: needs pretrain.init_from (a base to grow); "
                                      "for a larger model from scratch set model.tiny.num_layers", {})
        if 2 * self.shape_pairs > self.batch_size:
            raise PydanticCustomError("pretrain", "pretrain.shape_pairs: {p} pairs need {n} clips but pretrain.batch_size "
                                      "is {b}", {"p": self.shape_pairs, "n": 2 * self.shape_pairs, "b": self.batch_size})
        return self


def frames_for(protocol: str, num_frames: int | None = None) -> int:
    """Frames a critic sees per video: ``num_frames`` if set, else 8 for the binary question (Furuta et al.)
    and 16 for the IPO prompts."""
    return num_frames if num_frames is not None else (8 if protocol == "binary" else 16)


class CriticConfig(_Strict):
    """Which critic labels the videos (docs/CRITICS.md). ``backend`` picks the engine, ``protocol`` the question:
    ``score`` (the backend's own number: world judge, metric, CLIP), ``pairwise`` (IPO: A vs B, asked in both
    orders, only consistent verdicts kept), ``pointwise`` (IPO: Good / Normal / Bad) or ``binary`` (Furuta et al.:
    Accept / Reject). VLM backends (transformers, vllm) need a pairwise, pointwise or binary protocol and a model."""

    backend: Literal["world", "flow", "flicker", "clip", "transformers", "vllm"] = "world"
    protocol: Literal["score", "pairwise", "pointwise", "binary"] = "score"
    model: str | None = None  # VLM / CLIP path or hub id for the clip, transformers and vllm backends
    revision: str | None = None
    prompt_version: Literal["v1"] = Field("v1", description="version of the prompt templates (ipo_ray/critic/prompts.py)")
    dimension: Literal["overall", "consistency", "fidelity", "smoothness"] = "overall"
    num_frames: int | None = Field(None, ge=1, description="frames shown to a VLM/CLIP; default 16 (IPO), 8 (binary)")
    max_frame_pixels: int = Field(224 * 224, ge=64, description="frames larger than this are downscaled (no crop)")
    max_new_tokens: int = Field(64, ge=1)
    batch_size: int = Field(8, ge=1, description="VLM requests per forward batch")
    noise_accuracy: float | None = Field(None, gt=0.5, le=1.0)
    noise_seed: int = 0
    tensor_parallel_size: int = Field(1, ge=1)
    gpu_memory_utilization: float = Field(0.8, gt=0, le=1.0, description="vllm backend only")
    on_unparsable: Literal["drop", "abstain"] = "drop"
    num_actors: int = Field(1, ge=1)
    num_cpus: float = Field(0.25, gt=0)
    num_gpus: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _check_backend(self):
        vlm = self.backend in ("transformers", "vllm")
        if (vlm or self.backend == "clip") and not self.model:
            raise PydanticCustomError("critic", "critic.model is required when critic.backend is '{b}' (a local path or hub id)",
                                      {"b": self.backend})
        if vlm and self.protocol == "score":
            raise PydanticCustomError("critic", "critic.protocol must be pairwise, pointwise or binary for backend '{b}'"
                                      " (got 'score')", {"b": self.backend})
        return self

    def frames_for(self, protocol: str | None = None) -> int:
        """Frames per video: ``num_frames`` if set, else 8 for binary (Furuta et al.) and 16 for IPO prompts."""
        return frames_for(protocol or self.protocol, self.num_frames)


class AlgoConfig(_Strict):
    name: Literal["dpo", "kto", "rwr", "sft"] = "dpo"
    beta: float = Field(500.0, gt=0)
    lambda_chosen: float = Field(0.2, ge=0, description="NLL weight on chosen samples (IPO λ1)")
    lambda_real: float = Field(0.1, ge=0, description="NLL weight on real videos (IPO λ2 / KTO λ)")
    min_score_gap: float = Field(0.3, ge=0, le=1)
    pairs_per_group: int = Field(1, ge=1, description="DPO: disjoint best/worst pairs per group (1 = IPO's one pair)")
    pairing: Literal["rank", "accepted"] = Field("rank", description="DPO: 'rank' pairs the best against the worst "
                                                 "(pairs_per_group disjoint pairs); 'accepted' pairs every sample at or "
                                                 "above desirable_threshold with a sample below it (the worst first, "
                                                 "reused when they run out), so each accepted video is a chosen one, "
                                                 "as best-of-N SFT trains on each; groups with no accepted sample or "
                                                 "no rejected one are paired by rank")
    desirable_threshold: float = Field(0.8, ge=0, le=1)
    sft_per_group: int = Field(0, ge=0, description="best-of-N SFT: train on at most this many accepted samples "
                               "of each group, the best first (0 = every accepted sample)")
    lambda_desirable: float = Field(1.0, gt=0)
    lambda_undesirable: float = Field(1.0, gt=0)
    kto_balance: bool = Field(False, description="KTO: desirable and undesirable rows of each batch carry equal "
                              "shares of the loss (KTO's lambda_D*n_D = lambda_U*n_U), whatever the critic's accept rate")
    kto_nll_desirable: float = Field(0.0, ge=0, description="KTO: NLL weight on desirable rows (not in IPO's "
                                     "objective; the counterpart of DPO's lambda_chosen on chosen samples)")
    nll_units: Literal["mse", "beta"] = Field("mse", description="the NLL weights' units for DPO and KTO: 'mse' "
                                             "uses lambda_chosen, lambda_real and kto_nll_desirable as written on the "
                                             "per-sample mean squared error (DESIGN §3); 'beta' multiplies them by beta, "
                                             "the factor the preference term's gradient carries, so IPO's 0.2 / 0.1 weigh "
                                             "against it as in log-likelihood units (as written they are ~1e-4 of it: "
                                             "benchmarks/loss_terms.py)")
    rwr_shaping: Literal["linear", "exp", "best_of_n"] = "exp"
    rwr_temperature: float = Field(0.1, gt=0)

    def nll_weights(self) -> dict[str, float]:
        """The NLL weights the objective applies: ``lambda_chosen``, ``lambda_real``, ``kto_nll_desirable``,
        times ``beta`` under ``nll_units: beta`` for DPO and KTO (RWR and SFT have no beta in their main term)."""
        s = self.beta if self.nll_units == "beta" and self.name in ("dpo", "kto") else 1.0
        return {"lambda_chosen": self.lambda_chosen * s, "lambda_real": self.lambda_real * s,
                "kto_nll_desirable": self.kto_nll_desirable * s}


class TrainConfig(_Strict):
    num_workers: int = Field(2, ge=1)
    strategy: Literal["ddp", "fsdp"] = "ddp"
    use_gpu: bool = False
    gpus_per_worker: float = Field(1.0, gt=0, le=8, description="with use_gpu: GPUs each train worker reserves; a "
                                   "fraction shares a card with generator actors (loop.generator_gpus)")
    cpus_per_worker: float = Field(0.5, gt=0)
    batch_size: int = Field(8, ge=1, description="rows per worker per micro-batch")
    grad_accum: int = Field(1, ge=1)
    updates_per_batch: int = Field(1, ge=1, le=64, description="forward/backward passes on each batch of rows, each "
                                   "with its own timesteps, noise and real clips (sample reuse: semi-online trains "
                                   "each row this many times, as rounds mode does over its epochs_per_round)")
    lr: float = Field(2e-4, gt=0)
    warmup_steps: int = Field(0, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    real_batch_size: int = Field(4, ge=0)
    real_latent_cache: int = Field(256, ge=0, description="VAE models: keep this many real clips' latents "
                                   "(encoded once, reused every epoch); 0 encodes every step")
    shuffle_buffer_rows: int = Field(256, ge=0, description="rows each worker shuffles locally: rounds mode's "
                                     "training rows, and the real videos (0 = file order)")
    high_noise_fraction: float = Field(0.0, ge=0, le=1, description="share of rows whose t is drawn from the upper "
                                       "half of the schedule, where the prompt decides what the clip shows")
    seed: int = 0


class LoopConfig(_Strict):
    mode: Literal["rounds", "semi_online"] = "rounds"
    rounds: int = Field(3, ge=1)
    prompts_per_round: int = Field(48, ge=1, description="groups (K videos of one prompt) per round, one per prompt "
                                   "(capped at the prompt count); with focus_explore shared out from round 1")
    epochs_per_round: int = Field(2, ge=1)
    sync_every: int = Field(10, ge=1, description="optimizer steps between weight pushes")
    ref_update_every: int = Field(1, ge=0, description="syncs between reference moves (0 = never)")
    max_staleness: int = Field(1, ge=0)
    generator_actors: int = Field(1, ge=1)
    generator_cpus: float = Field(1.0, gt=0)
    generator_gpus: float = Field(0.0, ge=0)
    score_final: bool = Field(False, description="rounds mode (semi-online ignores it): roll the final policy out once "
                              "more (the next round's prompts; judged, not trained, its rows kept as that round's data) "
                              "so every version has rollout scores and the rollouts can name best_version (without it the evaluation's "
                              "train prompts name it)")
    focus_explore: float | None = Field(None, ge=0, le=1, description=(
        "rounds mode: from round 1, share each round's prompts_per_round groups out by the last rollouts "
        "(ipo_ray/focus.py): a prompt whose last group held an accepted and a rejected sample weighs 1, one all "
        "accepted or all rejected weighs this; None: every round draws prompts uniformly"))
    focus_threshold: float = Field(0.8, ge=0, le=1, description="critic score at which a sample counts as accepted "
                                   "for loop.focus_explore")

    @model_validator(mode="after")
    def _check(self):
        if self.focus_explore is not None and self.mode != "rounds":
            raise PydanticCustomError("loop", "loop.focus_explore: only in rounds mode (semi-online draws its prompts "
                                      "before any is judged)")
        return self


class EvalConfig(_Strict):
    seeds: int = Field(8, ge=1, description="seeds per prompt (at least)")
    min_samples_per_split: int = Field(256, ge=1, description="more seeds per prompt for small splits")
    seed_offset: int = 10_000
    splits: list[Literal["train", "heldout"]] = ["train", "heldout"]


class ServeAutoscalingConfig(_Strict):
    """Ray Serve autoscaling for the generator deployment (replaces ``num_replicas`` when set)."""

    min_replicas: int = Field(1, ge=0, le=1024)
    max_replicas: int = Field(2, ge=1, le=1024)
    target_ongoing_requests: float = Field(4.0, gt=0, le=1024, description="per replica")
    upscale_delay_s: float = Field(10.0, ge=0, le=3600)
    downscale_delay_s: float = Field(120.0, ge=0, le=3600)

    @model_validator(mode="after")
    def _check(self):
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"serve.autoscaling.min_replicas: {self.min_replicas} is more than "
                             f"max_replicas {self.max_replicas}")
        return self


class ServeConfig(_Strict):
    """``ipo-ray serve``: the Ray Serve app for the tuned generator (DESIGN §7)."""

    host: str = Field("127.0.0.1", description="HTTP bind address of the Serve proxy")
    port: int = Field(8000, ge=1, le=65535)
    num_replicas: int = Field(1, ge=1, le=1024)
    autoscaling: ServeAutoscalingConfig | None = None
    num_cpus: float = Field(1.0, gt=0, le=1024, description="CPUs per replica")
    num_gpus: float = Field(0.0, ge=0, le=64, description="GPUs per replica")
    torch_threads: int | None = Field(None, ge=1, le=1024, description="default: num_cpus rounded, at least 1")
    max_ongoing_requests: int = Field(32, ge=1, le=10_000, description="per replica; more queue in the proxy")
    batching: bool = Field(True, description="@serve.batch requests with the same steps/guidance/num_frames")
    max_batch_size: int = Field(8, ge=1, le=256)
    batch_wait_timeout_s: float = Field(0.05, ge=0, le=10)
    max_prompt_chars: int = Field(512, ge=1, le=100_000)
    max_steps: int = Field(50, ge=1, le=1000)
    max_guidance_scale: float = Field(20.0, ge=1.0, le=100.0)
    video_scale: int = Field(8, ge=1, le=32, description="default nearest-neighbour upscale of mp4/gif output")
    max_video_scale: int = Field(16, ge=1, le=64)
    fps: int = Field(8, ge=1, le=120)
    max_body_bytes: int = Field(65_536, ge=1024, le=16 * 2**20)

    @model_validator(mode="after")
    def _check(self):
        if self.batching and self.max_ongoing_requests < self.max_batch_size:
            raise ValueError(f"serve.max_ongoing_requests: {self.max_ongoing_requests} is less than "
                             f"max_batch_size {self.max_batch_size}; a batch could never fill")
        if self.video_scale > self.max_video_scale:
            raise ValueError(f"serve.video_scale: {self.video_scale} is more than max_video_scale "
                             f"{self.max_video_scale}")
        return self


class WandbConfig(_Strict):
    """wandb logging of the run (ipo_ray/wandb_log.py); the switch is the top-level ``wandb_mode``."""

    project: str = "ipo-ray"
    entity: str | None = None
    group: str | None = None
    run_name: str | None = Field(None, description="default: '<name>-<run dir name>'")
    tags: list[str] = []
    videos_per_round: int = Field(8, ge=0, le=64, description="judged videos logged per round (best/worst pairs)")
    poll_seconds: float = Field(30.0, ge=0, description="how often the driver logs new metrics; 0 = at round ends")
    init_timeout_s: float = Field(60.0, gt=0)


class Config(_Strict):
    name: str = "world-tiny"
    run_dir: str = "runs/world-tiny"
    seed: int = 0
    prompts: str = Field("world:train", description="'world:train', 'world:heldout', or a .txt/.parquet/.jsonl file")
    real_videos: str | None = Field("world:render", description="'world:render' or a Parquet of real videos")
    model: ModelConfig = ModelConfig()
    sampling: SamplingConfig = SamplingConfig()
    pretrain: PretrainConfig = PretrainConfig()
    critic: CriticConfig = CriticConfig()
    algo: AlgoConfig = AlgoConfig()
    train: TrainConfig = TrainConfig()
    loop: LoopConfig = LoopConfig()
    eval: EvalConfig = EvalConfig()
    serve: ServeConfig = ServeConfig()
    wandb_mode: Literal["offline", "online", "disabled"] = "offline"
    wandb: WandbConfig = WandbConfig()

    @property
    def sampling_dtype(self) -> str:
        """The dtype of the copies that only sample: ``sampling.dtype``, else ``model.dtype``."""
        return self.sampling.dtype or self.model.dtype

    @model_validator(mode="after")
    def _check(self):
        if self.model.source == "pretrained" and not self.model.path:
            raise ValueError("model.path: required when model.source is 'pretrained' (a diffusers dir or hub id)")
        if self.loop.focus_explore is not None and self.critic.protocol == "pairwise":
            raise PydanticCustomError("loop", "loop.focus_explore: needs per-sample critic scores; critic.protocol "
                                      "'pairwise' scores are win rates within a group")
        return self


class ConfigError(ValueError):
    """One-line configuration error that names the field."""


def _format(err: ValidationError) -> str:
    e = err.errors()[0]
    loc = ".".join(str(p) for p in e["loc"]) or "config"
    msg = e["msg"]
    if e["type"] == "extra_forbidden":
        msg = "unknown field"
    got = e.get("input")
    suffix = f" (got {got!r})" if got is not None and not isinstance(got, dict) and e["type"] != "extra_forbidden" else ""
    if re.match(r"[a-z_]+(\.[a-z_]+)+: ", msg):  # a check that names its field (pretrain.shape_pairs: ...)
        return f"config error: {msg}{suffix}"
    return f"config error: {loc}: {msg}{suffix}"


def _set_path(data: dict, dotted: str, value) -> None:
    keys = dotted.split(".")
    node = data
    for k in keys[:-1]:
        if not isinstance(node.get(k, {}), dict):
            raise ConfigError(f"config error: {dotted}: {k!r} is not a section")
        node = node.setdefault(k, {})
    node[keys[-1]] = value


def parse_overrides(overrides: list[str] | None) -> list[tuple[str, object]]:
    out = []
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"config error: --set {item!r}: expected key=value, e.g. loop.rounds=2")
        key, raw = item.split("=", 1)
        out.append((key.strip(), yaml.safe_load(raw) if raw != "" else None))
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config (or defaults), apply ``a.b=value`` overrides, validate."""
    data: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config error: file {str(p)!r} not found")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config error: file {str(p)!r} is not valid YAML: {str(exc).splitlines()[0]}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config error: file {str(p)!r} must hold a mapping at the top level")
    for key, value in parse_overrides(overrides):
        _set_path(data, key, value)
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format(err)) from None


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
