"""Evaluation: sample fixed prompts × fixed seeds from a checkpoint, judge, write Parquet + summary.

The same prompts and seeds are used for every checkpoint, so versions compare sample for sample.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm import tqdm

from .metrics import video_metrics
from .policy import T2VPolicy
from .video import save_sample
from .world import ACCEPT, judge, splits


def read_prompts(spec: str) -> list[str]:
    """``world:train`` / ``world:heldout``, a ``.txt`` (one prompt per line), ``.jsonl`` or
    ``.parquet`` with a ``prompt`` column."""
    if spec.startswith("world:"):
        name = spec.split(":", 1)[1]
        sp = splits()
        if name not in sp:
            raise ValueError(f"prompts {spec!r}: unknown world split; allowed: world:train, world:heldout")
        return list(sp[name])
    p = Path(spec)
    if not p.is_file():
        raise FileNotFoundError(f"prompts file {spec!r} not found")
    if p.suffix == ".parquet":
        table = pq.read_table(p)
        if "prompt" not in table.column_names:
            raise ValueError(f"prompts file {spec!r}: no 'prompt' column (has {table.column_names})")
        prompts = [str(x) for x in table.column("prompt").to_pylist()]
    elif p.suffix == ".jsonl":
        prompts = []
        for i, line in enumerate(p.read_text().splitlines(), 1):
            if line.strip():
                row = json.loads(line)
                if "prompt" not in row:
                    raise ValueError(f"prompts file {spec!r} line {i}: no 'prompt' field")
                prompts.append(str(row["prompt"]))
    else:
        prompts = [line.strip() for line in p.read_text().splitlines() if line.strip()]
    if not prompts:
        raise ValueError(f"prompts file {spec!r} has no prompts")
    return prompts


def split_of(prompt: str) -> str:
    sp = splits()
    return "train" if prompt in set(sp["train"]) else "heldout" if prompt in set(sp["heldout"]) else "other"


def summarize(scores: np.ndarray, prompts: list[str]) -> dict:
    """Acceptance (score >= 0.8), mean score, and the per-prompt acceptance histogram."""
    acc = scores >= ACCEPT
    per_prompt: dict[str, list[bool]] = {}
    for p, a in zip(prompts, acc):
        per_prompt.setdefault(p, []).append(bool(a))
    rates = np.array([np.mean(v) for v in per_prompt.values()]) if per_prompt else np.zeros(0)
    hist, edges = np.histogram(rates, bins=[0, 1e-9, 0.25, 0.5, 0.75, 1 - 1e-9, 1.0 + 1e-9])
    return {"n": int(scores.size), "acceptance": float(acc.mean()) if scores.size else 0.0,
            "mean_score": float(scores.mean()) if scores.size else 0.0,
            "prompts": len(per_prompt),
            "frac_prompts_strictly_between_10_90": float(((rates > 0.1) & (rates < 0.9)).mean()) if rates.size else 0.0,
            "per_prompt_hist": {"0": int(hist[0]), "(0,25)": int(hist[1]), "[25,50)": int(hist[2]),
                                "[50,75)": int(hist[3]), "[75,100)": int(hist[4]), "100": int(hist[5])}}


def evaluate_policy(policy: T2VPolicy, prompts: list[str], seeds: int | list[int], out: str | Path, version: int = 0,
                    steps: int = 20, guidance_scale: float = 2.0, batch_size: int = 32, seed_offset: int = 10_000,
                    save_videos: bool = True, with_metrics: bool = True) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    per_prompt = [int(seeds)] * len(prompts) if isinstance(seeds, int) else [int(n) for n in seeds]
    if len(per_prompt) != len(prompts):
        raise ValueError("seeds: give one count, or one count per prompt")
    jobs = [(p, seed_offset + s) for p, n in zip(prompts, per_prompt) for s in range(n)]
    rows: dict[str, list] = {k: [] for k in ("prompt", "seed", "policy_version", "split", "score", "accepted",
                                               "frames_path", "video_path", "temporal_flicker",
                                               "dynamic_degree", "motion_smoothness")}
    start = time.time()
    for i in tqdm(range(0, len(jobs), batch_size), desc=f"eval v{version}", mininterval=5):
        chunk = jobs[i:i + batch_size]
        frames, _ = policy.sample([p for p, _ in chunk], [s for _, s in chunk], steps, guidance_scale)
        for (p, s), fr in zip(chunk, frames):
            score = judge(fr, p)
            idx = len(rows["prompt"])
            npy, gif = save_sample(fr, out / "videos" / f"{idx:05d}") if save_videos else ("", "")
            met = video_metrics(fr) if with_metrics else {k: float("nan") for k in
                                                          ("temporal_flicker", "dynamic_degree", "motion_smoothness")}
            for k, v in (("prompt", p), ("seed", s), ("policy_version", version), ("split", split_of(p)),
                         ("score", score), ("accepted", score >= ACCEPT), ("frames_path", npy),
                         ("video_path", gif), *met.items()):
                rows[k].append(v)
    pq.write_table(pa.table(rows), out / "samples.parquet")
    scores = np.asarray(rows["score"])
    summary = {"policy_version": version, "seeds": seeds, "seed_offset": seed_offset, "steps": steps,
               "guidance_scale": guidance_scale, "seconds": time.time() - start, "all": summarize(scores, rows["prompt"])}
    for name in ("train", "heldout"):
        mask = np.asarray(rows["split"]) == name
        if mask.any():
            summary[name] = summarize(scores[mask], [p for p, m in zip(rows["prompt"], mask) if m])
    for k in ("temporal_flicker", "dynamic_degree", "motion_smoothness"):
        summary[k] = float(np.nanmean(rows[k])) if rows[k] else float("nan")
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def load_for_eval(run_dir: str, version: str | None, device: str = "cpu") -> tuple[T2VPolicy, int]:
    """A run directory (with ``--version``) or a bare base checkpoint directory."""
    from .policy import POLICY_FILE
    from .run_dir import RunDir

    if (Path(run_dir) / POLICY_FILE).is_file():
        if version not in (None, "base", "0"):
            raise ValueError(f"--version {version}: {run_dir} is a base checkpoint, not a run directory")
        return T2VPolicy.from_pretrained(run_dir).to(device), 0
    policy, v = RunDir(run_dir).load_policy(version)
    return policy.to(device), v


def set_threads() -> None:
    torch.set_num_threads(max(1, min(torch.get_num_threads(), 4)))
