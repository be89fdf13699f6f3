"""Shared fixtures: a tiny random world base (built from config, nothing downloaded) and one local
Ray cluster per session, bound to 127.0.0.1."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
torch.set_num_threads(2)

TINY = ["model.tiny.num_layers=1", "model.tiny.num_attention_heads=2", "model.tiny.attention_head_dim=8",
        "model.tiny.time_embed_dim=16", "model.tiny.text_dim=16", "model.tiny.text_layers=1",
        "model.tiny.patch_size=4"]


def http_get(url: str, token: str | None, timeout: float = 10) -> tuple[int, bytes]:
    """GET ``url`` (with ``Authorization: Bearer token`` when given): status and body, error statuses included."""
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def tiny_config(*overrides: str, base: str | None = None):
    from ipo_ray.config import load_config

    extra = [f"model.path={base}"] if base else []
    return load_config(ROOT / "configs" / "world-tiny.yaml", TINY + extra + list(overrides))


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> str:
    """A randomly initialised tiny world base saved as a diffusers-format checkpoint."""
    from ipo_ray.policy import T2VPolicy

    path = tmp_path_factory.mktemp("base") / "world-base"
    torch.manual_seed(0)
    T2VPolicy.build_tiny(tiny_config().model).save(path)
    return str(path)


@pytest.fixture(scope="session")
def ray_local():
    import ray

    from ipo_ray.local_ray import init_local_ray

    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    init_local_ray(num_cpus=4, include_dashboard=False, runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    yield ray
    shutdown_within(ray, 60)


def shutdown_within(ray, seconds: float) -> None:
    """``ray.shutdown()``, but never a hung session: Ray 2.60's driver can block for good closing its
    GCS subscriber once that connection is gone (ray-project/ray#45044). Past ``seconds`` the
    cluster's processes are killed and the tests' results stand."""
    import threading

    node = ray._private.worker._global_node
    done = threading.Thread(target=ray.shutdown, daemon=True)
    done.start()
    done.join(seconds)
    if done.is_alive() and node is not None:
        print(f"ray.shutdown() still blocked after {seconds:.0f}s: killing the session's Ray processes")
        node.kill_all_processes(check_alive=False, allow_graceful=False)


class LoopFailed(RuntimeError):
    pass


def train_job(ray, *args: str, env: dict | None = None) -> None:
    """``python jobs/train.py ARGS --no-eval`` (what ``ray job submit`` runs) as its own Ray driver, connected to
    the session's cluster by ``RAY_ADDRESS``; raises ``LoopFailed`` with the job's output tail if it fails."""
    proc = subprocess.run([sys.executable, str(ROOT / "jobs" / "train.py"), *args, "--no-eval"], cwd=ROOT,
                          env=os.environ | {"RAY_ADDRESS": ray.get_runtime_context().gcs_address} | (env or {}),
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        # The tail, plus every line naming an error: on a busy machine Ray's own log lines can push the job's
        # error out of the tail.
        errors = list(dict.fromkeys(x.strip() for x in (proc.stdout + proc.stderr).splitlines() if "Error" in x))
        raise LoopFailed(f"exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}\n"
                         "--- lines naming an error ---\n" + "\n".join(errors[:40]))
