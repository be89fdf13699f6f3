"""The run directory: where a run's config, published policy versions, preference data and
metrics live, so a run can be audited, resumed, evaluated and served.

    RUN_DIR/config.yaml             the validated config of the run
    RUN_DIR/policies/v000003/       published policy version 3 (state.safetensors + meta.json)
    RUN_DIR/data/round_000/*.parquet preference rows with provenance, one file per sync window
    RUN_DIR/metrics.jsonl           one JSON line per optimizer step / sync / round
    RUN_DIR/checkpoints/            trainer checkpoints (weights, optimizer, RNG, data position)

Version 0 is the base policy; the trainer publishes 1, 2, ...
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .config import Config, dump_config, load_config
from .policy import T2VPolicy


def _base_path(cfg: Config) -> str:
    if not cfg.model.path:
        raise ValueError("model.path: not set; run `ipo-ray pretrain` or point it at a checkpoint")
    return cfg.model.path


def load_base_policy(cfg: Config, sampling: bool = False) -> T2VPolicy:
    """The base policy; ``sampling=True``: a copy that only samples, in ``sampling.dtype`` (default ``model.dtype``)."""
    model = cfg.model.model_copy(update={"dtype": cfg.sampling_dtype}) if sampling else cfg.model
    return T2VPolicy.from_pretrained(_base_path(cfg), model)


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    # ---- config
    def write_config(self, cfg: Config) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / "config.yaml").write_text(dump_config(cfg))

    def config(self) -> Config:
        f = self.path / "config.yaml"
        if not f.is_file():
            raise FileNotFoundError(f"run dir {str(self.path)!r}: no config.yaml (is this a run directory?)")
        return load_config(f)

    # ---- policy versions
    def version_dir(self, version: int) -> Path:
        return self.path / "policies" / f"v{version:06d}"

    def versions(self) -> list[int]:
        root = self.path / "policies"
        if not root.is_dir():
            return []
        # Only published versions: a ``vNNNNNN.tmp`` left by a crash mid-publish is not one.
        return sorted(int(p.name[1:]) for p in root.iterdir()
                      if re.fullmatch(r"v\d+", p.name) and (p / "meta.json").is_file())

    def latest_version(self) -> int:
        v = self.versions()
        return v[-1] if v else 0

    def publish(self, version: int, state: dict[str, torch.Tensor], meta: dict) -> Path:
        """Write a policy version atomically (tmp dir, then rename): a reader never sees half."""
        final = self.version_dir(version)
        tmp = final.with_name(final.name + ".tmp")
        tmp.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp / "state.safetensors"))
        (tmp / "meta.json").write_text(json.dumps({**meta, "version": version, "time": time.time()}))
        if final.exists():
            import shutil

            shutil.rmtree(final)
        tmp.rename(final)
        return final

    def version_state(self, version: int) -> dict:
        """The weights a published version shipped (LoRA adapters only, or the full transformer)."""
        f = self.version_dir(int(version)) / "state.safetensors"
        if not f.is_file():
            raise FileNotFoundError(f"run dir {str(self.path)!r}: no policy version {version}; have {self.versions()}")
        return load_file(str(f))

    def load_policy(self, version: int | str | None = None) -> tuple[T2VPolicy, int]:
        """The base (``'base'`` or 0), a chosen version, ``'best'`` (``best_version`` in summary.json), or the
        latest (None)."""
        cfg = self.config()
        if version == "best":
            version = self.best_version()
        policy = load_base_policy(cfg, sampling=True)
        if version in ("base", 0, "0"):
            return policy, 0
        v = self.latest_version() if version is None else int(version)
        if v == 0:
            return policy, 0
        state = self.version_state(v)
        meta = json.loads((self.version_dir(v) / "meta.json").read_text())
        if meta.get("lora"):
            policy.cfg = policy.cfg.model_copy(update={"finetune": "lora"})
            policy.setup_finetune()
        policy.load_policy_state(state)
        return policy, v

    def best_version(self) -> int:
        """The version the finished run's summary names as best (by its rollouts, or by its evaluation's train prompts)."""
        f = self.path / "summary.json"
        summary = json.loads(f.read_text()) if f.is_file() else {}
        best = summary.get("best_version")
        if best is None and summary.get("best_version_note"):
            raise ValueError(f"--version best: run dir {str(self.path)!r} has {summary['best_version_note']}")
        if best is None:
            raise ValueError(f"--version best: run dir {str(self.path)!r} has no best_version in summary.json "
                             "(a finished run writes it from its rollouts when loop.score_final scores the last version, "
                             "else from its evaluation: ipo-ray report)")
        return int(best)

    # ---- metrics
    def log_metrics(self, record: dict) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

    def read_metrics(self) -> list[dict]:
        f = self.path / "metrics.jsonl"
        if not f.is_file():
            return []
        text = f.read_text()
        # Only whole lines: a record being appended right now (no newline yet) is read next time.
        return [json.loads(line) for line in text[:text.rfind("\n") + 1].splitlines() if line.strip()]
