"""Groups of judged samples -> training rows (DESIGN §1 ``to_training_rows``). Pure, no Ray.

One schema for every algorithm, so Ray Data blocks and Parquet files are uniform:

- ``kind="pair"`` (DPO): best vs worst of a group when the score gap is at least
  ``min_score_gap`` (IPO's selective sampling), up to ``pairs_per_group`` disjoint pairs; with
  ``pairing="accepted"`` every accepted sample is the chosen side of a pair instead (see ``group_rows``);
  ``*_l`` fields hold the rejected sample. When a
  pairwise critic marked the group's pair (samples with ``pair_role`` "chosen" / "rejected", a
  position-swap-consistent verdict), that pair is used as is.
- ``kind="point"`` (KTO / RWR / best-of-N SFT): one row per sample with ``desirable``
  (Good or Normal) and ``reward`` (the score). Best-of-N SFT keeps only the samples it trains on
  (score >= ``sft_threshold``): a row of weight zero would cost a forward and backward for nothing.
  ``sft_per_group = n > 0`` keeps only the n best of them per group (best-of-N in the strict sense: every
  prompt weighs the same, however often the policy already gets it right).

Every row keeps its provenance: sample ids, prompt, seeds, ``policy_version``, ``round``, the
critic's name, label and text. Latents travel as raw bytes with dtype and shape.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

ROW_FIELDS = ("row_id", "kind", "group_id", "prompt", "round", "policy_version", "sample_id", "seed", "score",
              "label", "critic_text", "latents", "frames_path", "sample_id_l", "seed_l", "score_l", "label_l", "critic_text_l",
              "latents_l", "frames_path_l", "desirable", "reward", "critic", "latent_shape", "latent_dtype")


def encode_latents(x: np.ndarray) -> bytes:
    return np.ascontiguousarray(x).tobytes()


def decode_latents(b: bytes, shape, dtype: str = "float32") -> np.ndarray:
    return np.frombuffer(b, dtype=np.dtype(dtype)).reshape([int(s) for s in shape])


def _point(s: dict, critic: str) -> dict:
    return {"row_id": s["sample_id"], "kind": "point", "group_id": s["group_id"], "prompt": s["prompt"],
            "round": int(s["round"]), "policy_version": int(s["policy_version"]), "sample_id": s["sample_id"],
            "seed": int(s["seed"]), "score": float(s["score"]), "label": s["label"], "critic_text": s["critic_text"],
            "latents": s["latents"], "frames_path": s.get("frames_path", ""), "sample_id_l": "", "seed_l": -1, "score_l": float("nan"), "label_l": "",
            "critic_text_l": "", "latents_l": b"", "frames_path_l": "", "desirable": s["label"] in ("Good", "Normal"),
            "reward": float(s["score"]), "critic": critic, "latent_shape": list(s["latent_shape"]),
            "latent_dtype": s.get("latent_dtype", "float32")}


def _pair(hi: dict, lo: dict, critic: str) -> dict:
    row = _point(hi, critic)
    row.update({"row_id": f"{hi['sample_id']}|{lo['sample_id']}", "kind": "pair", "sample_id_l": lo["sample_id"],
                "seed_l": int(lo["seed"]), "score_l": float(lo["score"]), "label_l": lo["label"],
                "critic_text_l": lo["critic_text"], "latents_l": lo["latents"], "frames_path_l": lo.get("frames_path", ""),
                "desirable": True})
    return row


def group_rows(samples: list[dict], algo: str, min_score_gap: float = 0.3, critic: str = "world",
               pairs_per_group: int = 1, sft_threshold: float = 0.8,
               sft_per_group: int = 0, pairing: str = "rank") -> tuple[list[dict], Counter]:
    """Rows from one group (all samples share prompt, round, and group_id). Invalid (unparsable)
    judgements are left out. Returns ``(rows, counts)`` where counts say what was dropped and why.

    DPO: the best vs the worst sample; with ``pairs_per_group = n > 1`` also the 2nd best vs the 2nd
    worst and so on, up to n disjoint pairs, each with at least ``min_score_gap`` between its two
    scores (every sample is used at most once). ``pairing="accepted"``: every sample scoring at least
    ``sft_threshold`` (the accept threshold) is the chosen side of one pair, against the samples below it,
    the worst first and reused in turn when there are fewer of them (gap at least ``min_score_gap``);
    a group without both falls back to the rank pairs."""
    counts: Counter = Counter()
    valid = [s for s in samples if s.get("valid", True)]
    counts["invalid_judgements"] += len(samples) - len(valid)
    if algo == "dpo":
        if len(valid) < 2:
            counts["groups_too_small"] += 1
            return [], counts
        roles = {s.get("pair_role", ""): s for s in valid}
        if "chosen" in roles and "rejected" in roles:
            hi, lo = roles["chosen"], roles["rejected"]
            counts["pairs_from_verdict"] += 1
            counts["rows"] += 1
            return [_pair(hi, lo, critic)], counts
        order = sorted(valid, key=lambda s: (s["score"], -int(s["seed"])))
        rows = []
        good = [s for s in order if s["score"] >= sft_threshold][::-1] if pairing == "accepted" else []  # best first
        bad = [s for s in order if s["score"] < sft_threshold] if good else []  # worst first
        if good and bad:
            for i, hi in enumerate(good):
                lo = bad[i % len(bad)]
                if hi["score"] - lo["score"] >= min_score_gap:
                    rows.append(_pair(hi, lo, critic))
            if not rows:
                counts["groups_no_contrast"] += 1
            counts["rows"] += len(rows)
            return rows, counts
        for i in range(min(pairs_per_group, len(order) // 2)):
            lo, hi = order[i], order[-1 - i]
            if hi["score"] - lo["score"] < min_score_gap:
                break
            rows.append(_pair(hi, lo, critic))
        if not rows:
            counts["groups_no_contrast"] += 1
        counts["rows"] += len(rows)
        return rows, counts
    if algo == "sft":
        good = sorted((s for s in valid if s["score"] >= sft_threshold), key=lambda s: (-s["score"], int(s["seed"])))
        counts["sft_below_threshold"] += len(valid) - len(good)
        if sft_per_group > 0:
            counts["sft_over_group_cap"] += max(0, len(good) - sft_per_group)
            good = good[:sft_per_group]
        rows = [_point(s, critic) for s in good]
        counts["rows"] += len(rows)
        return rows, counts
    if algo in ("kto", "rwr"):
        rows = [_point(s, critic) for s in valid]
        counts["rows"] += len(rows)
        return rows, counts
    raise ValueError(f"algo.name: unknown {algo!r}; allowed: dpo, kto, rwr, sft")


def to_training_rows(samples: list[dict], algo: str, min_score_gap: float = 0.3,
                     critic: str = "world", pairs_per_group: int = 1,
                     sft_threshold: float = 0.8, sft_per_group: int = 0,
                     pairing: str = "rank") -> tuple[list[dict], Counter]:
    """Group samples by ``group_id`` (order kept) and make rows for each group."""
    groups: dict[str, list[dict]] = {}
    for s in samples:
        groups.setdefault(s["group_id"], []).append(s)
    rows, counts = [], Counter()
    for g in groups.values():
        r, c = group_rows(g, algo, min_score_gap, critic, pairs_per_group, sft_threshold, sft_per_group, pairing)
        rows += r
        counts += c
    counts["groups"] += len(groups)
    return rows, counts


def rows_for(samples: list[dict], algo, critic: str = "world") -> tuple[list[dict], Counter]:
    """``to_training_rows`` with the row settings of an ``AlgoConfig`` (the one place that maps its fields)."""
    return to_training_rows(samples, algo.name, algo.min_score_gap, critic, algo.pairs_per_group,
                            algo.desirable_threshold, algo.sft_per_group, algo.pairing)


def columns(rows: list[dict]) -> dict[str, list]:
    """Row dicts -> a column dict (a Ray Data / Arrow batch)."""
    return {k: [r[k] for r in rows] for k in ROW_FIELDS}


_TYPES = {"row_id": "string", "kind": "string", "group_id": "string", "prompt": "string", "round": "int64",
          "policy_version": "int64", "sample_id": "string", "seed": "int64", "score": "float64", "label": "string",
          "critic_text": "string", "latents": "binary", "frames_path": "string", "sample_id_l": "string",
          "seed_l": "int64", "score_l": "float64", "label_l": "string", "critic_text_l": "string",
          "latents_l": "binary", "frames_path_l": "string", "desirable": "bool", "reward": "float64",
          "critic": "string", "latent_shape": "list<int64>", "latent_dtype": "string"}


def row_schema():
    import pyarrow as pa

    kinds = {"string": pa.string(), "int64": pa.int64(), "float64": pa.float64(), "binary": pa.binary(),
             "bool": pa.bool_(), "list<int64>": pa.list_(pa.int64())}
    return pa.schema([(k, kinds[_TYPES[k]]) for k in ROW_FIELDS])


def rows_table(rows: list[dict]):
    """Rows as an Arrow table with the fixed schema (also when empty, so blocks always concat)."""
    import pyarrow as pa

    return pa.Table.from_pydict(columns(rows), schema=row_schema())
