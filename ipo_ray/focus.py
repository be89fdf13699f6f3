"""Rollout focus: share a round's prompt groups out by where the last rollouts held contrast. Pure, no Ray.

Preference learning from the policy's own samples needs groups that hold both a success and a failure:
a prompt the policy always gets wrong (or always right) gives pairs of two failures (or none), and
best-of-N SFT nothing to imitate. DAPO's "dynamic sampling" drops such groups and samples more; here a
round's fixed budget of ``loop.prompts_per_round`` groups is shared out instead (``loop.focus_explore``):

- a prompt whose latest rolled-out group held an accepted and a rejected sample weighs 1;
- a prompt whose latest group was all accepted or all rejected weighs ``explore`` (so it can come back:
  a prompt at 10% succeeds in none of 8 seeds 43% of the time);
- a prompt never rolled out weighs 1;
- if that leaves every weight 0 (``explore`` 0 and no prompt with contrast), every prompt weighs 1.

Each prompt then gets ``n * w / sum(w)`` groups, rounded by systematic sampling (every prompt gets the floor
or the ceiling of its share; the total is exactly ``n``). A prompt's second and later groups in a round use
other seeds (``policy.seeds_for(..., repeat=j)``), so every sample stays unique.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def prompt_contrast(history: dict[str, tuple[int, int]]) -> dict[str, bool]:
    """``history``: prompt -> (accepted, judged) of its latest rolled-out round. True where both kinds occur."""
    return {p: 0 < a < n for p, (a, n) in history.items()}


def focus_weights(prompts: list[str], history: dict[str, tuple[int, int]], explore: float) -> np.ndarray:
    """One weight per prompt (see the module docstring)."""
    contrast = prompt_contrast(history)
    w = np.array([1.0 if contrast.get(p, True) else float(explore) for p in prompts])
    return w if w.any() else np.ones_like(w)  # explore 0 and no prompt with contrast: every prompt alike


def allocate_groups(weights: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Groups per prompt: ``n`` in all, prompt ``i`` gets floor or ceil of ``n * w_i / sum(w)`` (systematic
    sampling over a random order, so which prompts get the extra group is seeded, not positional)."""
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 1 or w.size == 0 or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"allocate_groups: weights must be non-negative with a positive sum, got {w.tolist()}")
    order = rng.permutation(w.size)
    edges = np.concatenate([[0.0], np.cumsum(w[order] / w.sum() * n)])
    points = rng.random() + np.arange(n)
    hits = np.histogram(points, bins=edges)[0]
    counts = np.zeros(w.size, dtype=np.int64)
    counts[order] = hits
    return counts


def read_history(samples_dir: str | Path, before_round: int, threshold: float) -> dict[str, tuple[int, int]]:
    """Per prompt, (accepted, judged) in the latest round before ``before_round`` that rolled it out, from the
    run's ``samples/round_XXX/*.parquet`` (score >= ``threshold`` is accepted)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    history: dict[str, tuple[int, int]] = {}
    for r in range(before_round):
        files = sorted(Path(samples_dir, f"round_{r:03d}").glob("*.parquet"))
        if not files:
            continue
        t = pa.concat_tables([pq.read_table(f, columns=["prompt", "score"]) for f in files]).to_pandas()
        for prompt, s in t.groupby("prompt")["score"]:
            history[str(prompt)] = (int((s >= threshold).sum()), int(s.size))
    return history
