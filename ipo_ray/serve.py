"""Ray Serve app for the tuned generator (DESIGN §7, issue 5): JSON in, video out.

    POST /v1/generate   {prompt, seed?, num_frames?, steps?, guidance_scale?, format?, scale?}
                        -> mp4 (video/mp4), gif (image/gif) or npy (application/octet-stream)
    GET  /v1/model      run dir, policy version, config summary, request limits
    GET  /healthz       liveness (never needs the token)
    GET  /openapi.json  the schema (FastAPI), /docs the UI

One deployment (``T2VGenerator``) loads the base, a chosen policy version or the latest of a run
directory (LoRA versions are merged into the base for serving). Requests that share
``(steps, guidance_scale, num_frames)`` are sampled together: ``@serve.batch`` collects up to
``serve.max_batch_size`` requests or waits ``serve.batch_wait_timeout_s``, then each group of equal
settings is one ``T2VPolicy.sample`` call. All model work runs on one thread per replica, so with
batching off requests are sampled one at a time.

Every bad request gets a 4xx with ``{"error": "<field>: <what is wrong>", "field": "<field>"}``.

Entry points: ``ipo-ray serve`` (:func:`deploy`), ``serve run/deploy`` with the import path
``ipo_ray.serve:app_builder`` (see ``cluster/serve_config.yaml``).
"""

from __future__ import annotations

import asyncio
import hmac
import io
import os
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from fastapi import Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from ray import serve

from .config import Config, ServeConfig, SamplingConfig

APP_NAME = "ipo-ray"
TOKEN_ENV = "IPO_RAY_SERVE_TOKEN"
SEED_MAX = 2**31 - 1
MEDIA_TYPES = {"mp4": "video/mp4", "gif": "image/gif", "npy": "application/octet-stream"}
GENERATE_FIELDS = ("prompt", "seed", "num_frames", "steps", "guidance_scale", "format", "scale")


class ApiError(Exception):
    """A client error: HTTP status, the offending field and a one-line message."""

    def __init__(self, status: int, field: str | None, message: str):
        super().__init__(message)
        self.status, self.field, self.message = status, field, message

    def body(self) -> dict:
        return {"error": f"{self.field}: {self.message}" if self.field else self.message, "field": self.field}


# ---------------------------------------------------------------------------------------------- config
def serve_config_for(run_dir: str | Path, overrides: dict | None = None) -> tuple[ServeConfig, SamplingConfig]:
    """The run's ``serve`` section (defaults for a bare base checkpoint) with ``overrides`` applied."""
    from .config import ConfigError, _format, load_config

    cfg_file = Path(run_dir) / "config.yaml"
    cfg = load_config(cfg_file) if cfg_file.is_file() else Config()
    data = cfg.serve.model_dump()
    for key, value in (overrides or {}).items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    try:
        return ServeConfig.model_validate(data), cfg.sampling
    except ValidationError as err:
        raise ConfigError(_format(err).replace("config error: ", "config error: serve.", 1)) from None


def deployment_options(scfg: ServeConfig) -> dict:
    """``Deployment.options`` from the config: replicas or autoscaling, resources, concurrency."""
    opts: dict[str, Any] = {
        "max_ongoing_requests": scfg.max_ongoing_requests,
        "ray_actor_options": {"num_cpus": scfg.num_cpus, "num_gpus": scfg.num_gpus},
    }
    if scfg.autoscaling is not None:
        a = scfg.autoscaling
        opts["autoscaling_config"] = {
            "min_replicas": a.min_replicas, "max_replicas": a.max_replicas,
            "initial_replicas": max(a.min_replicas, 1),
            "target_ongoing_requests": a.target_ongoing_requests,
            "upscale_delay_s": a.upscale_delay_s, "downscale_delay_s": a.downscale_delay_s}
    else:
        opts["num_replicas"] = scfg.num_replicas
    return opts


async def read_body(request, limit: int) -> bytes:
    """The request body, refused (413) as soon as it is known to exceed ``limit`` bytes: by its
    Content-Length before reading, else while streaming it, never after buffering all of it."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "body", f"{declared} bytes; at most {limit}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(413, "body", f"more than {limit} bytes")
    return bytes(body)


# ---------------------------------------------------------------------------------------------- loading
def version_arg(version: str | int | None) -> str | None:
    """A version as the user gave it: None (or "" / "latest") for the latest, else its text."""
    return None if version in (None, "", "latest") else str(version)


def load_served_policy(run_dir: str, version: str | int | None = None, base_dir: str | None = None):
    """``(policy, version, finetune)`` for serving: base (``'base'``/0), version N, or the latest (None).

    A relative ``model.path`` in the run's config is resolved against ``base_dir`` (where the app
    was built) when it does not exist from the replica's working directory. LoRA versions are
    merged into the base transformer (one forward pass per step, as fast as a full model).
    """
    from .evaluate import load_for_eval
    from .policy import POLICY_FILE
    from .run_dir import RunDir

    version = version_arg(version)
    if (Path(run_dir) / POLICY_FILE).is_file():
        policy, v = load_for_eval(run_dir, version)
    else:
        class _RunDir(RunDir):
            def config(self):
                cfg = super().config()
                p = cfg.model.path
                if p and base_dir and not Path(p).is_absolute() and not Path(p).exists() \
                        and (Path(base_dir) / p).exists():
                    cfg.model.path = str(Path(base_dir) / p)
                return cfg

        policy, v = _RunDir(run_dir).load_policy(version)
    finetune = "full"
    if policy.is_lora:
        finetune = "lora"
        policy.transformer = policy.transformer.merge_and_unload()
    policy.transformer.eval()
    return policy, v, finetune


def supported_num_frames(policy) -> list[int]:
    """Frame counts the model can generate: the tiny world transformer and a CogVideoX checkpoint
    both have a fixed positional table sized for the training frame count."""
    return [int(policy.cfg.frames)]


def request_model(scfg: ServeConfig, frames: list[int]) -> type[BaseModel]:
    """The ``POST /v1/generate`` body, with this deployment's limits (it is also the OpenAPI schema)."""
    return create_model(
        "GenerateRequest",
        __config__=ConfigDict(extra="forbid", strict=True, title="GenerateRequest"),
        prompt=(str, Field(..., min_length=1, max_length=scfg.max_prompt_chars,
                           description="text prompt; words must be in the model's vocabulary")),
        seed=(int | None, Field(None, ge=0, le=SEED_MAX, description="noise seed; random when absent")),
        num_frames=(int | None, Field(None, ge=1,
                                      description=f"frames per video; this model supports {frames}",
                                      json_schema_extra={"enum": frames})),
        steps=(int | None, Field(None, ge=1, le=scfg.max_steps, description="denoising steps")),
        guidance_scale=(float | None, Field(None, ge=1.0, le=scfg.max_guidance_scale,
                                            description="classifier-free guidance (1 = off)")),
        format=(Literal["mp4", "gif", "npy"], Field("mp4", description="mp4 (H.264), gif, or npy "
                                                    "(lossless uint8 [frames, height, width, 3])")),
        scale=(int | None, Field(None, ge=1, le=scfg.max_video_scale,
                                 description=f"nearest-neighbour upscale of mp4/gif (default {scfg.video_scale})")),
    )


def validation_error(err: ValidationError) -> ApiError:
    """The first pydantic error as an :class:`ApiError` naming the field."""
    e = err.errors()[0]
    loc = ".".join(str(p) for p in e["loc"])
    if e["type"] == "json_invalid":
        return ApiError(400, "body", f"not valid JSON ({e['msg'].removeprefix('Invalid JSON: ')}); "
                                     "expected an object like {\"prompt\": \"a red square falls down\"}")
    if not loc:
        return ApiError(422, "body", "expected a JSON object like {\"prompt\": \"a red square falls down\"}")
    if e["type"] == "extra_forbidden":
        return ApiError(422, loc, f"unknown field; allowed: {', '.join(GENERATE_FIELDS)}")
    if e["type"] == "missing":
        return ApiError(422, loc, "required")
    got = repr(e.get("input"))
    got = got if len(got) <= 60 else f"{got[:40]}... ({len(str(e.get('input')))} characters)"
    return ApiError(422, loc, f"{e['msg'][0].lower()}{e['msg'][1:]} (got {got})")


def check_prompt(tokenizer, prompt: str, max_tokens: int) -> None:
    """Reject prompts the model would silently misread: blank, words it has no token for (the tiny
    world's word-level vocabulary), or more tokens than the text encoder reads."""
    if not prompt.strip():
        raise ApiError(422, "prompt", "empty")
    try:
        enc = tokenizer(prompt, truncation=False, return_offsets_mapping=True)
        offsets = enc["offset_mapping"]
    except (NotImplementedError, ValueError):  # slow tokenizers have no offsets
        enc, offsets = tokenizer(prompt, truncation=False), None
    ids = list(enc["input_ids"])
    unk = tokenizer.unk_token_id
    if unk is not None and unk in ids:
        words = sorted({prompt[a:b] for i, (a, b) in zip(ids, offsets) if i == unk}) if offsets else []
        listed = f" {words!r}" if words else ""
        vocab = tokenizer.get_vocab()
        allowed = ""
        if len(vocab) <= 200:
            allowed = "; vocabulary: " + " ".join(sorted(w for w in vocab if not w.startswith("<")))
        raise ApiError(422, "prompt", f"words outside the model's vocabulary{listed}{allowed}")
    if len(ids) > max_tokens:
        raise ApiError(422, "prompt", f"{len(ids)} tokens (with end of text); the model reads at most "
                                      f"{max_tokens}, so the rest would be cut off")


# ---------------------------------------------------------------------------------------------- work
@dataclass
class Job:
    prompt: str
    seed: int
    num_frames: int
    steps: int
    guidance_scale: float
    format: str
    scale: int

    @property
    def key(self) -> tuple:
        return (self.steps, self.guidance_scale, self.num_frames)


@dataclass
class Result:
    data: bytes
    media_type: str
    batch_size: int
    seconds: float
    shape: tuple


def encode(frames: np.ndarray, fmt: str, scale: int, fps: int) -> bytes:
    from .video import gif_bytes, mp4_bytes

    if fmt == "npy":
        buf = io.BytesIO()
        np.save(buf, np.asarray(frames, np.uint8), allow_pickle=False)
        return buf.getvalue()
    if fmt == "gif":
        return gif_bytes(frames, fps=fps, scale=scale)
    return mp4_bytes(frames, fps=fps, scale=scale)


@serve.deployment(name="T2VGenerator", health_check_period_s=10, graceful_shutdown_timeout_s=5)
@serve.ingress()
class T2VGenerator:
    """One replica: the policy, the request checks, batching, and the FastAPI app."""

    def __init__(self, run_dir: str, version: str | int | None, serve_cfg: dict, token: str | None = None,
                 base_dir: str | None = None):
        import torch

        self.scfg = ServeConfig.model_validate(serve_cfg)
        torch.set_num_threads(self.scfg.torch_threads or max(1, int(round(self.scfg.num_cpus))))
        self.run_dir = str(run_dir)
        self.token = token or os.environ.get(TOKEN_ENV) or None
        t0 = time.time()
        self.policy, self.version, self.finetune = load_served_policy(run_dir, version, base_dir)
        if self.scfg.num_gpus > 0 and torch.cuda.is_available():
            self.policy.to("cuda")
        self.load_seconds = time.time() - t0
        self.frames = supported_num_frames(self.policy)
        self.max_tokens = self.policy._text_len()
        _, sampling = serve_config_for(run_dir) if (Path(run_dir) / "config.yaml").is_file() \
            else (None, SamplingConfig())
        self.default_steps = min(sampling.steps, self.scfg.max_steps)
        self.default_guidance = min(sampling.guidance_scale, self.scfg.max_guidance_scale)
        self.Request = request_model(self.scfg, self.frames)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="t2v-sample")
        self._lock = threading.Lock()
        self.stats = {"requests": 0, "videos": 0, "batches": 0, "sample_seconds": 0.0}
        if self.scfg.batching:
            self._batched.set_max_batch_size(self.scfg.max_batch_size)
            self._batched.set_batch_wait_timeout_s(self.scfg.batch_wait_timeout_s)

    # ---- model work (one thread)
    def _run_jobs(self, jobs: list[Job]) -> list[Result]:
        out: list[Result | None] = [None] * len(jobs)
        groups: dict[tuple, list[int]] = {}
        for i, j in enumerate(jobs):
            groups.setdefault(j.key, []).append(i)
        for (steps, guidance, _), idx in groups.items():
            t0 = time.time()
            frames, _ = self.policy.sample([jobs[i].prompt for i in idx], [jobs[i].seed for i in idx],
                                           steps=steps, guidance_scale=guidance)
            seconds = time.time() - t0
            for i, fr in zip(idx, frames):
                j = jobs[i]
                out[i] = Result(encode(fr, j.format, j.scale, self.scfg.fps), MEDIA_TYPES[j.format], len(idx),
                                seconds, tuple(fr.shape))
            with self._lock:
                self.stats["videos"] += len(idx)
                self.stats["batches"] += 1
                self.stats["sample_seconds"] += seconds
        return out  # type: ignore[return-value]

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.05)
    async def _batched(self, jobs: list[Job]) -> list[Result]:
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._run_jobs, jobs)

    async def generate(self, job: Job) -> Result:
        with self._lock:
            self.stats["requests"] += 1
        if self.scfg.batching:
            return await self._batched(job)
        return (await asyncio.get_running_loop().run_in_executor(self._pool, self._run_jobs, [job]))[0]

    # ---- request handling
    def parse(self, body: bytes, content_type: str | None) -> Job:
        mime = (content_type or "").split(";")[0].strip().lower()
        if mime != "application/json" and not (mime.startswith("application/") and mime.endswith("+json")):
            raise ApiError(415, "content-type", f"expected application/json, got {content_type!r}")
        if len(body) > self.scfg.max_body_bytes:
            raise ApiError(413, "body", f"{len(body)} bytes; at most {self.scfg.max_body_bytes}")
        try:
            req = self.Request.model_validate_json(body)
        except ValidationError as err:
            raise validation_error(err) from None
        check_prompt(self.policy.tokenizer, req.prompt, self.max_tokens)
        num_frames = self.frames[0] if req.num_frames is None else req.num_frames
        if num_frames not in self.frames:
            raise ApiError(422, "num_frames", f"this model generates only {self.frames} frames per video "
                                              f"(it was trained at a fixed frame count); got {num_frames}")
        return Job(prompt=req.prompt, seed=secrets.randbelow(SEED_MAX + 1) if req.seed is None else req.seed,
                   num_frames=num_frames, steps=req.steps or self.default_steps,
                   guidance_scale=float(self.default_guidance if req.guidance_scale is None else req.guidance_scale),
                   format=req.format, scale=req.scale or self.scfg.video_scale)

    def check_token(self, authorization: str | None) -> None:
        if self.token is None:
            return
        scheme, _, value = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), self.token.encode()):
            raise ApiError(401, "authorization", "missing or wrong bearer token"
                           if authorization else "required: 'Authorization: Bearer <token>'")

    def model_info(self) -> dict:
        from .policy import POLICY_FILE
        from .run_dir import RunDir

        c = self.policy.cfg
        is_run = not (Path(self.run_dir) / POLICY_FILE).is_file()
        info: dict[str, Any] = {
            "run_dir": self.run_dir, "version": self.version,
            "available_versions": RunDir(self.run_dir).versions() if is_run else [],
            "finetune": self.finetune, "codec": self.policy.codec.kind,
            "model": {"source": c.source, "path": self.run_dir, "frames": c.frames, "height": c.height, "width": c.width,
                      "prediction_type": c.prediction_type, "parameters": self.policy.num_parameters(),
                      "max_text_tokens": self.max_tokens},
            "defaults": {"steps": self.default_steps, "guidance_scale": self.default_guidance,
                         "num_frames": self.frames[0], "format": "mp4", "scale": self.scfg.video_scale},
            "limits": {"prompt_chars": self.scfg.max_prompt_chars, "prompt_tokens": self.max_tokens,
                       "num_frames": self.frames, "steps": [1, self.scfg.max_steps],
                       "guidance_scale": [1.0, self.scfg.max_guidance_scale], "seed": [0, SEED_MAX],
                       "scale": [1, self.scfg.max_video_scale], "body_bytes": self.scfg.max_body_bytes},
            "batching": {"enabled": self.scfg.batching, "max_batch_size": self.scfg.max_batch_size,
                         "batch_wait_timeout_s": self.scfg.batch_wait_timeout_s},
            "auth": "bearer" if self.token else "none",
            "load_seconds": round(self.load_seconds, 3),
            "stats": dict(self.stats),
        }
        if is_run:
            cfg = RunDir(self.run_dir).config()
            info["model"]["path"] = cfg.model.path
            info["config"] = {"name": cfg.name, "algo": cfg.algo.name, "beta": cfg.algo.beta,
                              "loop_mode": cfg.loop.mode, "rounds": cfg.loop.rounds, "critic": cfg.critic.backend,
                              "finetune": cfg.model.finetune}
        return info

    def __serve_build_asgi_app__(self):
        return build_http_app(self)


def build_http_app(gen: T2VGenerator):
    """The FastAPI app of one replica (built at replica start, so the schema carries its limits)."""
    from fastapi import Depends, FastAPI
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from fastapi.security import HTTPBearer
    from starlette.exceptions import HTTPException as StarletteHTTPException

    app = FastAPI(title="ipo-ray generator", version="1",
                  description="Text-to-video generator tuned with preference feedback (ipo-ray).")
    bearer = HTTPBearer(auto_error=False, description=f"set with --token or ${TOKEN_ENV}; optional")

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError):
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse(exc.body(), status_code=exc.status, headers=headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException):
        return JSONResponse({"error": str(exc.detail), "field": None}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _request_error(_: Request, exc: RequestValidationError):
        e = exc.errors()[0]
        field = ".".join(str(p) for p in e["loc"][1:]) or str(e["loc"][0])
        return JSONResponse({"error": f"{field}: {e['msg']}", "field": field}, status_code=422)

    async def auth(request: Request, _cred=Depends(bearer)) -> None:
        gen.check_token(request.headers.get("authorization"))

    err = {"content": {"application/json": {"example": {"error": "steps: input should be less than or equal "
                                                                  "to 50 (got 500)", "field": "steps"}}}}
    schema = gen.Request.model_json_schema()

    @app.get("/healthz", summary="liveness")
    async def healthz() -> dict:
        return {"status": "ok", "version": gen.version}

    @app.get("/v1/model", summary="the loaded run, policy version, config summary and request limits",
             dependencies=[Depends(auth)], responses={401: {"description": "token required", **err}})
    async def model() -> dict:
        return gen.model_info()

    @app.post("/v1/generate", summary="generate one video", dependencies=[Depends(auth)],
              response_class=Response,
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}},
              responses={200: {"description": "the video; headers X-Seed, X-Policy-Version, X-Batch-Size, ...",
                               "content": {t: {} for t in MEDIA_TYPES.values()}},
                         400: {"description": "body is not valid JSON", **err},
                         401: {"description": "token required", **err},
                         413: {"description": "body too large", **err},
                         415: {"description": "content type is not application/json", **err},
                         422: {"description": "a field is missing, unknown or out of range", **err}})
    async def generate(request: Request) -> Response:
        job = gen.parse(await read_body(request, gen.scfg.max_body_bytes), request.headers.get("content-type"))
        res = await gen.generate(job)
        headers = {"X-Seed": str(job.seed), "X-Policy-Version": str(gen.version), "X-Steps": str(job.steps),
                   "X-Guidance-Scale": f"{job.guidance_scale:g}", "X-Num-Frames": str(job.num_frames),
                   "X-Frame-Shape": "x".join(map(str, res.shape)), "X-Batch-Size": str(res.batch_size),
                   "X-Sample-Seconds": f"{res.seconds:.4f}",
                   "Content-Disposition": f'inline; filename="seed{job.seed}.{job.format}"'}
        return Response(content=res.data, media_type=res.media_type, headers=headers)

    return app


# ---------------------------------------------------------------------------------------------- building
class ServeAppArgs(BaseModel):
    """Arguments of :func:`app_builder` (the ``args:`` of a Serve config file)."""

    model_config = ConfigDict(extra="forbid")
    run_dir: str = Field(..., description="run directory (or a bare base checkpoint directory)")
    version: str | int | None = Field(None, description="'base', a version number, or latest (null)")
    token: str | None = Field(None, description=f"bearer token; default ${TOKEN_ENV}; none = open")
    serve: dict[str, Any] = Field(default_factory=dict, description="overrides of the run's serve section")


def app_builder(args: dict | None = None):
    """``serve run ipo_ray.serve:app_builder run_dir=DIR [version=N]`` and Serve config files."""
    from .config import ConfigError
    from .policy import POLICY_FILE
    from .run_dir import RunDir

    try:
        a = ServeAppArgs.model_validate(dict(args or {}))
    except ValidationError as err:
        e = err.errors()[0]
        raise ConfigError(f"serve app args: {'.'.join(map(str, e['loc']))}: {e['msg']}") from None
    base_dir = os.getcwd()
    run_dir = Path(a.run_dir).expanduser()
    run_dir = str(run_dir if run_dir.is_absolute() else (Path(base_dir) / run_dir).resolve())
    version = version_arg(a.version)
    if not (Path(run_dir) / POLICY_FILE).is_file():
        rd = RunDir(run_dir)
        rd.config()  # a clear error when this is not a run directory
        if version not in (None, "base") and not (version.isdigit() and
                                                  (int(version) == 0 or int(version) in rd.versions())):
            raise FileNotFoundError(f"run dir {run_dir!r}: no policy version {version!r}; have {rd.versions()}")
    elif version not in (None, "base", "0"):
        raise ValueError(f"version {version}: {run_dir} is a base checkpoint, not a run directory")
    scfg, _ = serve_config_for(run_dir, a.serve)
    token = a.token or os.environ.get(TOKEN_ENV) or None
    return T2VGenerator.options(**deployment_options(scfg)).bind(run_dir, version, scfg.model_dump(), token,
                                                                 base_dir)


def deploy(run_dir: str, version: str | int | None = None, host: str | None = None, port: int | None = None,
           token: str | None = None, serve_overrides: dict | None = None, address: str | None = None,
           name: str = APP_NAME) -> str:
    """Start (or join) Ray, start Serve's HTTP proxy on ``host:port`` and deploy; returns the URL.

    Without ``address`` (and when Ray is not initialised yet) a local Ray is started with its
    services bound to 127.0.0.1. Everything is checked before Ray starts.
    """
    import ray

    overrides = dict(serve_overrides or {})
    app = app_builder({"run_dir": run_dir, "version": version, "token": token, "serve": overrides})
    scfg, _ = serve_config_for(_abs(run_dir), overrides)
    host = host or scfg.host
    port = port or scfg.port
    if not ray.is_initialized():
        if address:
            ray.init(address=address)
        else:
            from ipo_ray.local_ray import init_local_ray

            init_local_ray(include_dashboard=False)
    serve.start(http_options={"host": host, "port": port})
    serve.run(app, name=name, route_prefix="/")
    return f"http://{host}:{port}"


def serve_forever(run_dir: str, version: str | int | None = None, log=print, **kwargs) -> int:
    """``ipo-ray serve``: deploy, print where, block until Ctrl-C or SIGTERM, then shut Serve down."""
    import signal

    import ray

    from .run_dir import RunDir

    url = deploy(run_dir, version=version, **kwargs)
    v = version_arg(version) or (
        RunDir(_abs(run_dir)).latest_version() if (Path(_abs(run_dir)) / "config.yaml").is_file() else 0)
    auth = "bearer token required" if (kwargs.get("token") or os.environ.get(TOKEN_ENV)) else "no token"
    log(f"serving {_abs(run_dir)} policy version {v} at {url} ({auth})\n"
        f"  POST {url}/v1/generate   GET {url}/v1/model   GET {url}/healthz   {url}/docs\n"
        "Ctrl-C to stop.")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    log("shutting down")
    serve.shutdown()
    ray.shutdown()
    return 0


def _abs(run_dir: str) -> str:
    p = Path(run_dir).expanduser()
    return str(p if p.is_absolute() else p.resolve())
