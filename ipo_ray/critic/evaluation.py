"""Critic accuracy against labelled data (the analogue of IPO Table 6), and a labelled set for the world.

Labelled data: JSONL or Parquet, one item per line / row:

- pairwise: ``{"task": "pairwise", "prompt": ..., "video_a": ..., "video_b": ..., "labels": ["A", "B", "A"]}``
- pointwise: ``{"task": "pointwise", "prompt": ..., "video": ..., "labels": ["Good", "Normal", "Good"]}``
  (labels Good / Normal / Bad, or Accept / Reject)

``labels`` holds one label per annotator (or ``label``, a single one); the reference is the majority
vote, and items whose vote is split evenly between the leading labels are left out (counted). A video
is a path to a ``.npy`` ``[F, H, W, 3]`` uint8 array or an mp4/GIF (relative to the data file), or the
bytes of either (Parquet).

For the verifiable world, :func:`world_labelled_set` writes such a set from rendered videos, correct and
with flaws (``ipo_ray.world.FLAWS``), labelled by the world judge (optionally as several simulated
annotators of a chosen accuracy, to exercise the vote).
"""

from __future__ import annotations

import io
import json
import os
from collections import Counter
from pathlib import Path

import numpy as np

from .base import Critic, label_for

PAIR_LABELS = {"a": "A", "b": "B", "tie": "tie", "equal": "tie"}
POINT_LABELS = {"good": "Good", "normal": "Normal", "average": "Normal", "bad": "Bad", "poor": "Bad",
                "accept": "Accept", "reject": "Reject"}


def majority(labels: list[str]) -> str | None:
    """The most common label; None when the leading labels tie."""
    counts = Counter(labels).most_common()
    if not counts or (len(counts) > 1 and counts[0][1] == counts[1][1]):
        return None
    return counts[0][0]


def load_video(src, base: Path | None = None) -> np.ndarray:
    """A labelled item's video as uint8 (T, H, W, 3): a file path (.npy or a video file) or inline bytes."""
    video = _read_video_source(src, base)
    where = "inline video" if isinstance(src, (bytes, bytearray)) else f"video {str(src)!r}"
    if video.ndim != 4 or video.shape[-1] != 3:
        raise ValueError(f"labelled data: {where}: shape {tuple(video.shape)}; expected (frames, height, width, 3)")
    if video.dtype != np.uint8:
        raise ValueError(f"labelled data: {where}: dtype {video.dtype}; expected uint8 pixels")
    return video


def _read_video_source(src, base: Path | None) -> np.ndarray:
    if isinstance(src, (bytes, bytearray)):
        if bytes(src[:6]) == b"\x93NUMPY":
            return np.load(io.BytesIO(src))
        from ipo_ray.video import read_video

        return read_video(bytes(src))
    p = Path(src)
    if not p.is_absolute() and base is not None:
        p = base / p
    if not p.is_file():
        raise FileNotFoundError(f"labelled data: video {str(p)!r} not found")
    if p.suffix == ".npy":
        return np.load(p)
    from ipo_ray.video import read_video

    return read_video(p)


def read_labelled(path: str | Path) -> list[dict]:
    """Items of a JSONL / Parquet labelled set, validated (one-line errors naming the item and field)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"labelled data: file {str(path)!r} not found")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        rows = pq.read_table(path).to_pylist()
    elif path.suffix == ".jsonl":
        rows = []
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"labelled data: {path.name} line {n}: not JSON ({exc.msg})") from None
    else:
        raise ValueError(f"labelled data: {str(path)!r} must be .jsonl or .parquet")
    items = []
    for n, r in enumerate(rows, 1):
        if not isinstance(r, dict):
            raise ValueError(f"labelled data: item {n}: expected a JSON object, got {type(r).__name__}")
        task = r.get("task") or ("pairwise" if "video_a" in r else "pointwise")
        if task not in ("pairwise", "pointwise"):
            raise ValueError(f"labelled data: item {n}: task: unknown {task!r}; allowed: pairwise, pointwise")
        need = ("prompt", "video_a", "video_b") if task == "pairwise" else ("prompt", "video")
        for k in need:
            if r.get(k) in (None, ""):
                raise ValueError(f"labelled data: item {n}: {k}: required for a {task} item")
        raw = r.get("labels")
        if isinstance(raw, str):  # "labels": "Good" means one label, not four letters
            raw = [raw]
        raw = list(raw) if raw is not None else ([r["label"]] if r.get("label") is not None else [])
        if not raw:
            raise ValueError(f"labelled data: item {n}: labels: at least one label is required")
        allowed = PAIR_LABELS if task == "pairwise" else POINT_LABELS
        labels = []
        for x in raw:
            if str(x).strip().lower() not in allowed:
                raise ValueError(f"labelled data: item {n}: labels: unknown {x!r}; allowed: "
                                 f"{sorted(set(allowed.values()))}")
            labels.append(allowed[str(x).strip().lower()])
        items.append({**r, "task": task, "labels": labels, "base": path.parent})
    return items


def evaluate(critic: Critic, items: list[dict]) -> dict:
    """Pairwise and pointwise accuracy of ``critic`` against the majority labels of ``items``.

    Pairwise: ``critic.compare`` (VLM critics: both orders, consistent verdicts only) against A/B
    majorities; a critic's tie or missing verdict counts as wrong (also reported as coverage).
    Pointwise: the critic's label (``judge_points``) equals the majority label (Good / Normal / Bad); for
    Accept / Reject labels, the critic's desirability (Good or Normal) is compared.
    """
    res: Counter = Counter()
    by_prompt: dict[str, list[tuple[dict, np.ndarray]]] = {}
    for it in items:
        ref = majority(it["labels"])
        if ref is None:
            res[f"{it['task']}_no_majority"] += 1
            continue
        if it["task"] == "pairwise":
            if ref == "tie":
                res["pairwise_reference_ties"] += 1
                continue
            v = critic.compare(it["prompt"], load_video(it["video_a"], it.get("base")),
                               load_video(it["video_b"], it.get("base")))
            res["pairwise_n"] += 1
            res["pairwise_decided"] += v.winner in ("A", "B")
            res["pairwise_critic_ties"] += v.winner == "tie"
            res["pairwise_no_verdict"] += v.winner is None
            res["pairwise_correct"] += v.winner == ref
        else:
            by_prompt.setdefault(it["prompt"], []).append((it | {"ref": ref}, load_video(it["video"], it.get("base"))))
    for prompt, group in by_prompt.items():
        for (it, _), j in zip(group, critic.judge_points(prompt, [v for _, v in group])):
            res["pointwise_n"] += 1
            res["pointwise_invalid"] += not j.valid
            desirable = j.valid and j.label in ("Good", "Normal")
            if it["ref"] in ("Accept", "Reject"):
                res["pointwise_correct"] += j.valid and desirable == (it["ref"] == "Accept")
            else:
                res["pointwise_correct"] += j.valid and j.label == it["ref"]
            # An unparsable answer is wrong whatever the reference (as a missing pairwise verdict is).
            res["pointwise_desirable_correct"] += j.valid and desirable == (it["ref"] in ("Good", "Normal", "Accept"))
    out: dict = {"critic": critic.name, **res}
    if res["pairwise_n"]:
        out["pairwise_accuracy"] = res["pairwise_correct"] / res["pairwise_n"]
        out["pairwise_coverage"] = res["pairwise_decided"] / res["pairwise_n"]
    if res["pointwise_n"]:
        out["pointwise_accuracy"] = res["pointwise_correct"] / res["pointwise_n"]
        out["pointwise_desirable_accuracy"] = res["pointwise_desirable_correct"] / res["pointwise_n"]
    out["critic_stats"] = critic.summary()
    return out


def world_labelled_set(out: str | Path, pairs: int = 100, points: int = 100, seed: int = 0, annotators: int = 1,
                       annotator_accuracy: float = 1.0, flawed_fraction: float = 0.5, frames: int = 8,
                       size: int = 16) -> Path:
    """Write ``OUT/labels.jsonl`` (+ ``OUT/videos/*.npy``): world videos labelled by the world judge.

    Each video is correct or (with probability ``flawed_fraction``) has a random flaw. Pairwise items
    compare two videos of one prompt, labelled by the higher judge score (equal scores are redrawn);
    pointwise items carry ``label_for(judge score)``. With ``annotators > 1`` each annotator reports the
    judge's label with probability ``annotator_accuracy`` and another label otherwise. A complete set
    already in ``OUT`` is reused when it was made with the same parameters (``OUT/params.json``), and
    refused otherwise: never overwritten.
    """
    from ipo_ray.world import FLAWS, judge, render, splits

    params = {"pairs": pairs, "points": points, "seed": seed, "annotators": annotators,
              "annotator_accuracy": annotator_accuracy, "flawed_fraction": flawed_fraction, "frames": frames,
              "size": size}
    out = Path(out)
    path = out / "labels.jsonl"
    if path.is_file():
        made = json.loads((out / "params.json").read_text()) if (out / "params.json").is_file() else {}
        diff = [k for k in params if made.get(k) != params[k]]
        if diff:
            raise ValueError(f"--world-set {out}: made with " + ", ".join(f"{k}={made.get(k)!r}" for k in diff)
                             + "; asked for " + ", ".join(f"{k}={params[k]!r}" for k in diff)
                             + " (choose another --world-set directory or delete this one)")
        return path
    if annotators < 1:
        raise ValueError(f"eval-critic: --annotators must be >= 1, got {annotators}")
    if not 0.0 <= annotator_accuracy <= 1.0:
        raise ValueError(f"eval-critic: --annotator-accuracy must be in [0, 1], got {annotator_accuracy}")
    (out / "videos").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sp = splits()
    prompts = sp["train"] + sp["heldout"]

    def draw(prompt: str, tag: str) -> tuple[str, float]:
        s = int(rng.integers(1 << 30))
        flaw = FLAWS[int(rng.integers(len(FLAWS)))] if rng.random() < flawed_fraction else None
        v = render(prompt, s, frames=frames, height=size, width=size, flaw=flaw)
        name = f"videos/{tag}.npy"
        np.save(out / name, v)
        return name, float(judge(v, prompt))

    def votes(truth: str, choices: tuple[str, ...]) -> list[str]:
        others = [c for c in choices if c != truth]
        return [truth if rng.random() < annotator_accuracy else others[int(rng.integers(len(others)))]
                for _ in range(annotators)]

    lines = []
    for k in range(pairs):
        prompt = prompts[int(rng.integers(len(prompts)))]
        for _ in range(20):
            (a, sa), (b, sb) = draw(prompt, f"pair{k:05d}_a"), draw(prompt, f"pair{k:05d}_b")
            if abs(sa - sb) > 1e-6:
                break
        else:  # no contrast found for this prompt: leave the item out
            continue
        truth = "A" if sa > sb else "B"
        lines.append({"task": "pairwise", "prompt": prompt, "video_a": a, "video_b": b,
                      "labels": votes(truth, ("A", "B")), "judge_scores": [sa, sb]})
    for k in range(points):
        prompt = prompts[int(rng.integers(len(prompts)))]
        v, s = draw(prompt, f"point{k:05d}")
        lines.append({"task": "pointwise", "prompt": prompt, "video": v,
                      "labels": votes(label_for(s), ("Good", "Normal", "Bad")), "judge_score": s})
    (out / "params.json").write_text(json.dumps(params, sort_keys=True))
    # labels.jsonl marks the set complete: written last, and whole (beside, then renamed).
    tmp = out / "labels.jsonl.tmp"
    tmp.write_text("".join(json.dumps(x) + "\n" for x in lines))
    os.replace(tmp, path)
    return path
