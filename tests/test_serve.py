"""The Ray Serve app: real HTTP requests to a deployment on 127.0.0.1 (issue 5, part 1)."""

from __future__ import annotations

import io
import json
import socket
import threading
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from tests.conftest import ROOT, tiny_config

TOKEN = "test-token-123"
OK = "a red square falls down"
# No proxies from the environment: every request goes straight to 127.0.0.1.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_dir(tmp: Path, base: str, lora: bool = False, *overrides: str) -> Path:
    """A run directory whose policy v1 is the tiny base (full) or base + non-zero LoRA adapters (v2)."""
    from ipo_ray.policy import T2VPolicy
    from ipo_ray.run_dir import RunDir

    cfg = tiny_config(*overrides, base=base)
    rd = RunDir(tmp)
    rd.write_config(cfg)
    policy = T2VPolicy.from_pretrained(base, cfg.model)
    rd.publish(1, policy.policy_state(), {"lora": False, "round": 0, "step": 0, "reason": "test"})
    if lora:
        policy.cfg = policy.cfg.model_copy(update={"finetune": "lora"})
        policy.setup_finetune()
        torch.manual_seed(1)
        state = {k: torch.randn_like(v) * 0.2 for k, v in policy.policy_state().items()}
        rd.publish(2, state, {"lora": True, "round": 1, "step": 1, "reason": "test"})
    return tmp


def call(url: str, path: str, body=None, token: str | None = TOKEN, content_type: str | None = "application/json",
         method: str | None = None):
    data = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
    req = urllib.request.Request(url + path, data=data, method=method or ("POST" if data is not None else "GET"))
    if content_type and data is not None:
        req.add_header("Content-Type", content_type)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with _OPENER.open(req, timeout=60) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


@pytest.fixture(scope="module")
def server(ray_local, tiny_base, tmp_path_factory):
    from ray import serve

    from ipo_ray.serve import deploy

    run = _run_dir(tmp_path_factory.mktemp("serve") / "run", tiny_base)
    port = _free_port()
    url = deploy(str(run), version=None, host="127.0.0.1", port=port, token=TOKEN,
                 serve_overrides={"max_batch_size": 4, "batch_wait_timeout_s": 0.25, "max_steps": 8,
                                  "video_scale": 2, "fps": 4})
    assert url == f"http://127.0.0.1:{port}"
    yield url
    serve.shutdown()


def test_generate_returns_playable_videos_of_the_right_shape(server):
    import av
    from PIL import Image

    status, headers, body = call(server, "/v1/generate", {"prompt": OK, "seed": 7, "steps": 2, "format": "mp4"})
    assert status == 200, body
    assert headers["Content-Type"] == "video/mp4"
    assert headers["X-Seed"] == "7" and headers["X-Policy-Version"] == "1" and headers["X-Steps"] == "2"
    with av.open(io.BytesIO(body)) as container:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    assert frames.shape == (8, 32, 32, 3)  # 8 frames of 16x16, upscaled 2x (serve.video_scale)

    status, headers, body = call(server, "/v1/generate", {"prompt": OK, "seed": 7, "steps": 2, "format": "mp4",
                                                          "scale": 1})
    with av.open(io.BytesIO(body)) as container:
        assert np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)]).shape == (8, 16, 16, 3)

    status, headers, body = call(server, "/v1/generate", {"prompt": OK, "seed": 7, "steps": 2, "format": "npy",
                                                          "num_frames": 8, "guidance_scale": 1.5})
    assert status == 200 and headers["Content-Type"] == "application/octet-stream"
    frames = np.load(io.BytesIO(body), allow_pickle=False)
    assert frames.shape == (8, 16, 16, 3) and frames.dtype == np.uint8
    again = np.load(io.BytesIO(call(server, "/v1/generate", {"prompt": OK, "seed": 7, "steps": 2, "format": "npy",
                                                                 "guidance_scale": 1.5})[2]))
    assert np.array_equal(frames, again)  # same seed and settings -> the same video

    status, headers, body = call(server, "/v1/generate", {"prompt": "a blue circle grows", "steps": 1,
                                                          "format": "gif"})
    assert status == 200 and headers["Content-Type"] == "image/gif" and body[:6] == b"GIF89a"
    assert 0 <= int(headers["X-Seed"]) < 2**31  # a random seed, reported
    assert Image.open(io.BytesIO(body)).n_frames == 8


def test_requests_with_the_same_settings_are_batched(server):
    results = []

    def one(steps: int, seed: int):
        results.append(call(server, "/v1/generate", {"prompt": OK, "seed": seed, "steps": steps, "format": "npy"}))

    threads = [threading.Thread(target=one, args=(1 + i % 2, i)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r[0] for r in results] == [200] * 6
    sizes = [int(r[1]["X-Batch-Size"]) for r in results]
    assert all(1 <= s <= 3 for s in sizes), sizes  # a batch is split into groups of equal steps
    assert max(sizes) >= 2, sizes  # requests that arrive within the 0.25 s window are sampled together
    assert sorted(r[1]["X-Steps"] for r in results) == ["1", "1", "1", "2", "2", "2"]


BAD = [
    ({}, 422, "prompt"),
    ({"prompt": ""}, 422, "prompt"),
    ({"prompt": "   "}, 422, "prompt"),
    ({"prompt": "a" * 513}, 422, "prompt"),  # over serve.max_prompt_chars
    ({"prompt": " ".join(["a red square"] * 6)}, 422, "prompt"),  # over the text encoder's 16 tokens
    ({"prompt": "a purple hexagon falls down"}, 422, "prompt"),  # outside the vocabulary
    ({"prompt": 5}, 422, "prompt"),
    ({"prompt": OK, "steps": 0}, 422, "steps"),
    ({"prompt": OK, "steps": 9}, 422, "steps"),  # over serve.max_steps
    ({"prompt": OK, "steps": "2"}, 422, "steps"),
    ({"prompt": OK, "steps": 2.5}, 422, "steps"),
    ({"prompt": OK, "guidance_scale": 0.5}, 422, "guidance_scale"),
    ({"prompt": OK, "guidance_scale": 1e9}, 422, "guidance_scale"),
    ({"prompt": OK, "seed": -1}, 422, "seed"),
    ({"prompt": OK, "seed": 2**31}, 422, "seed"),
    ({"prompt": OK, "num_frames": 12}, 422, "num_frames"),
    ({"prompt": OK, "format": "avi"}, 422, "format"),
    ({"prompt": OK, "scale": 0}, 422, "scale"),
    ({"prompt": OK, "negative_prompt": "blurry"}, 422, "negative_prompt"),
    ([OK], 422, "body"),
    (b"{not json", 400, "body"),
    (b"", 400, "body"),
]


@pytest.mark.parametrize("body,status,field", BAD, ids=[f"{i}-{f}" for i, (_, _, f) in enumerate(BAD)])
def test_bad_input_is_a_4xx_naming_the_field(server, body, status, field):
    got, headers, raw = call(server, "/v1/generate", body)
    assert got == status, raw
    assert headers["Content-Type"] == "application/json"
    err = json.loads(raw)
    assert err["field"] == field and err["error"].startswith(f"{field}: ")


def test_bad_input_messages_say_what_is_allowed(server):
    err = json.loads(call(server, "/v1/generate", {"prompt": OK, "num_frames": 12})[2])["error"]
    assert "only [8] frames" in err and "got 12" in err
    err = json.loads(call(server, "/v1/generate", {"prompt": "a purple hexagon falls down"})[2])["error"]
    assert "'hexagon'" in err and "'purple'" in err and "vocabulary" in err
    err = json.loads(call(server, "/v1/generate", {"prompt": OK, "foo": 1})[2])["error"]
    assert err.startswith("foo: unknown field; allowed: prompt, seed")
    err = json.loads(call(server, "/v1/generate", {"prompt": "a" * 600})[2])["error"]
    assert err.startswith("prompt: string should have at most 512 characters") and len(err) < 200


def test_wrong_content_type_size_and_method(server):
    status, _, raw = call(server, "/v1/generate", json.dumps({"prompt": OK}).encode(), content_type="text/plain")
    assert status == 415 and json.loads(raw)["field"] == "content-type"
    status, _, raw = call(server, "/v1/generate", json.dumps({"prompt": OK}).encode(), content_type=None)
    assert status == 415  # urllib's default form content type
    status, _, raw = call(server, "/v1/generate", {"prompt": "a" * 70_000})
    assert status == 413 and json.loads(raw)["field"] == "body"
    status, _, raw = call(server, "/v1/generate", method="GET")
    assert status == 405 and "error" in json.loads(raw)
    assert call(server, "/nope")[0] == 404


def test_bearer_token_is_enforced(server):
    for path, body in (("/v1/generate", {"prompt": OK, "steps": 1}), ("/v1/model", None)):
        status, headers, raw = call(server, path, body, token=None)
        assert status == 401 and headers["WWW-Authenticate"] == "Bearer"
        assert json.loads(raw)["field"] == "authorization"
        assert call(server, path, body, token="wrong")[0] == 401
    status, _, raw = call(server, "/v1/generate", {"prompt": OK, "steps": 1}, token=None, content_type="text/plain")
    assert status == 401  # auth is checked before anything about the request is revealed
    assert call(server, "/healthz", token=None)[0] == 200


def test_healthz_model_and_openapi(server):
    status, _, raw = call(server, "/healthz", token=None)
    assert status == 200 and json.loads(raw) == {"status": "ok", "version": 1}
    status, _, raw = call(server, "/v1/model")
    info = json.loads(raw)
    assert status == 200 and info["version"] == 1 and info["available_versions"] == [1]
    assert Path(info["run_dir"]).is_dir() and info["finetune"] == "full" and info["auth"] == "bearer"
    assert info["model"]["frames"] == 8 and info["model"]["height"] == 16 and info["limits"]["steps"] == [1, 8]
    assert info["config"]["algo"] == "dpo" and info["batching"]["max_batch_size"] == 4
    assert info["stats"]["videos"] >= 1
    status, _, raw = call(server, "/openapi.json", token=None)
    spec = json.loads(raw)
    assert status == 200 and set(spec["paths"]) >= {"/v1/generate", "/v1/model", "/healthz"}
    body = spec["paths"]["/v1/generate"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["additionalProperties"] is False
    assert set(body["properties"]) == {"prompt", "seed", "num_frames", "steps", "guidance_scale", "format", "scale"}
    assert body["properties"]["format"]["enum"] == ["mp4", "gif", "npy"]
    assert "video/mp4" in spec["paths"]["/v1/generate"]["post"]["responses"]["200"]["content"]
    assert "HTTPBearer" in spec["components"]["securitySchemes"]


# ------------------------------------------------------------------------------------- no HTTP needed
def test_lora_version_is_merged_and_matches_the_adapter_model(tiny_base, tmp_path):
    from ipo_ray.run_dir import RunDir
    from ipo_ray.serve import load_served_policy

    # float32 sampling: a merge into bf16 weights rounds W + BA to bf16 (up to 4/255 apart here), hiding a wrong merge
    run = _run_dir(tmp_path / "run", tiny_base, True, "sampling.dtype=float32")
    served, version, finetune = load_served_policy(str(run), None)
    assert (version, finetune, served.is_lora) == (2, "lora", False)
    adapters, v = RunDir(run).load_policy(2)
    assert v == 2 and adapters.is_lora
    a, _ = served.sample([OK], [3], steps=2)
    b, _ = adapters.sample([OK], [3], steps=2)
    base, _ = RunDir(run).load_policy("base")[0].sample([OK], [3], steps=2)
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1  # merged == adapters (up to rounding)
    assert not np.array_equal(a, base)
    assert load_served_policy(str(run), "1")[1:] == (1, "full")


def test_serve_config_file_and_cli_errors(tiny_base, tmp_path, capsys):
    from ray.serve.schema import ServeDeploySchema

    from ipo_ray.serve import app_builder
    from jobs.cli import build_parser, main

    spec = yaml.safe_load((ROOT / "cluster" / "serve_config.yaml").read_text())
    schema = ServeDeploySchema.model_validate(spec) if hasattr(ServeDeploySchema, "model_validate") \
        else ServeDeploySchema.parse_obj(spec)
    assert schema.http_options.host == "127.0.0.1"
    (app,) = spec["applications"]
    module, attr = app["import_path"].split(":")
    assert f"{module}:{attr}" == "ipo_ray.serve:app_builder"
    run = _run_dir(tmp_path / "run", tiny_base)
    built = app_builder({**app["args"], "run_dir": str(run)})  # binds the deployment, deploys nothing
    assert type(built).__name__ == "Application"

    args = build_parser().parse_args(["serve", "--run-dir", str(run)])
    assert (args.host, args.port, args.version) == (None, None, None)  # serve.host: 127.0.0.1
    assert main(["serve", "--run-dir", str(run), "--version", "9"]) == 2
    assert "no policy version '9'" in capsys.readouterr().err
    assert main(["serve", "--run-dir", str(tmp_path / "missing")]) == 2
    assert "no config.yaml" in capsys.readouterr().err
    assert main(["serve", "--run-dir", str(run), "--set", "serve.max_steps=0"]) == 2
    assert "serve.max_steps" in capsys.readouterr().err
