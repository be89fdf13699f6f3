"""The run report: one self-contained HTML page (inline SVG plots, GIFs as data URIs).

Sections: the config; learning curves (loss, implicit accuracy) per optimizer step; acceptance
of the rollouts per policy version (the critic's own scores of what each version generated);
evaluation summaries per checkpoint (train / held-out acceptance, VBench-style metrics); and, for a
fixed set of prompts and seeds, the videos of the base and of every evaluated version side by side.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq


def svg_lines(series: dict[str, list[tuple[float, float]]], title: str, width: int = 460, height: int = 220) -> str:
    """A minimal line chart: ``series`` maps a label to (x, y) points."""
    pts = [p for s in series.values() for p in s if np.isfinite(p[1])]
    if not pts:
        return f"<p><i>{html.escape(title)}: no data</i></p>"
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1
    pad = 40
    colors = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"]

    def sx(x):
        return pad + (x - x0) / (x1 - x0) * (width - 2 * pad)

    def sy(y):
        return height - pad + (y - y0) / (y1 - y0) * (2 * pad - height)

    out = [f'<svg width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg" class="chart">',
           f'<text x="{width / 2}" y="16" text-anchor="middle" font-size="13">{html.escape(title)}</text>',
           f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="#999"/>',
           f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" stroke="#999"/>',
           f'<text x="{pad - 4}" y="{height - pad}" text-anchor="end" font-size="10">{y0:.3g}</text>',
           f'<text x="{pad - 4}" y="{pad + 4}" text-anchor="end" font-size="10">{y1:.3g}</text>',
           f'<text x="{pad}" y="{height - pad + 14}" font-size="10">{x0:.3g}</text>',
           f'<text x="{width - pad}" y="{height - pad + 14}" text-anchor="end" font-size="10">{x1:.3g}</text>']
    for i, (label, s) in enumerate(series.items()):
        s = [p for p in s if np.isfinite(p[1])]
        if not s:
            continue
        c = colors[i % len(colors)]
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in s)
        out.append(f'<polyline fill="none" stroke="{c}" stroke-width="1.8" points="{path}"/>')
        if len(s) <= 12:
            out += [f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{c}"/>' for x, y in s]
        out.append(f'<text x="{width - pad}" y="{pad + 14 * i}" text-anchor="end" font-size="11" fill="{c}">'
                   f'{html.escape(label)}</text>')
    out.append("</svg>")
    return "".join(out)


def _gif_uri(path: str) -> str:
    p = Path(path)
    if not p.is_file():
        return ""
    return "data:image/gif;base64," + base64.b64encode(p.read_bytes()).decode()


def rollout_acceptance(run_dir: Path, common_prompts: bool = False) -> list[dict]:
    """Per policy version: acceptance and mean critic score of the rollouts it generated. ``common_prompts``
    (runs with ``loop.focus_explore``, whose rounds share their groups out unevenly): only the prompts every
    version rolled out, each prompt weighing the same, so versions are compared on the same prompts."""
    files = sorted((run_dir / "samples").glob("round_*/*.parquet"))
    if not files:
        return []
    import pyarrow as pa

    t = pa.concat_tables([pq.read_table(f, columns=["policy_version", "prompt", "score"]) for f in files]).to_pandas()
    t["accepted"] = t["score"] >= 0.8
    if common_prompts:
        common = set.intersection(*t.groupby("policy_version")["prompt"].apply(set))
        t = t[t["prompt"].isin(common)] if common else t  # none in common: every prompt, still balanced
        t = t.groupby(["policy_version", "prompt"]).agg(n=("score", "size"), accepted=("accepted", "mean"),
                                                         score=("score", "mean")).reset_index()
        return [{"policy_version": int(v), "n": int(g["n"].sum()), "prompts": int(len(g)),
                 "acceptance": float(g["accepted"].mean()), "mean_score": float(g["score"].mean())}
                for v, g in t.groupby("policy_version")]
    return [{"policy_version": int(v), "n": int(g["score"].size), "acceptance": float(g["accepted"].mean()),
             "mean_score": float(g["score"].mean())} for v, g in t.groupby("policy_version")]


def best_rollout(rollouts: list[dict]) -> dict | None:
    """The record of the policy version whose own rollouts the critic scored best: highest acceptance, then
    highest mean score, then the later version. A model-selection rule on training prompts and fresh seeds,
    judged by the training critic (never by the evaluation)."""
    return max(rollouts, key=lambda r: (r["acceptance"], r["mean_score"], r["policy_version"])) if rollouts else None


NO_FINAL_ROLLOUT = ("no best_version by rollouts: the final version v{v} rolled nothing out (loop.score_final is "
                    "off, or semi-online), so it could not be chosen; the run's evaluation names one (ipo-ray report), or "
                    "pass --version N")

# A pairwise critic's score is a video's win rate within its own group (the mean is 0.5 by construction), so
# its rollout "acceptance" says nothing about which version is better: no best version is named then.
NO_BEST_PAIRWISE = ("no best_version: the critic is pairwise, its scores are win rates within each group and do not "
                    "compare policy versions; pick a version by evaluation (ipo-ray eval) and pass --version N")


def best_version(rollouts: list[dict], protocol: str = "score") -> int | None:
    """The version :func:`best_rollout` picks; None without rollouts or when the critic is pairwise."""
    r = best_rollout(rollouts) if protocol != "pairwise" else None
    return None if r is None else r["policy_version"]


def best_fields(rollouts: list[dict], protocol: str = "score", final_version: int | None = None) -> dict:
    """summary.json's ``best_version`` by the rollouts (``best_version_by: "rollouts"``), or None and a
    ``best_version_note`` saying why: a pairwise critic cannot rank versions, or the final version has no
    rollouts (``loop.score_final`` off, or semi-online), and a best that could never be the final one would mislead."""
    if protocol == "pairwise" and rollouts:
        return {"best_version": None, "best_version_note": NO_BEST_PAIRWISE}
    if rollouts and final_version is not None and final_version not in {r["policy_version"] for r in rollouts}:
        return {"best_version": None, "best_version_note": NO_FINAL_ROLLOUT.format(v=final_version)}
    best = best_version(rollouts, protocol)
    return {"best_version": best, **({"best_version_by": "rollouts"} if best is not None else {})}


def best_by_eval(evals: list[dict], final_version: int) -> dict | None:
    """The evaluated version with the highest acceptance on the evaluation's train prompts (then mean score, then
    the later version), when the final version is among them; never by the held-out split. None otherwise."""
    scored = [e for e in evals if "train" in e]
    if final_version not in {e["policy_version"] for e in scored}:
        return None
    top = max(scored, key=lambda e: (e["train"]["acceptance"], e["train"]["mean_score"], e["policy_version"]))
    return {"best_version": int(top["policy_version"]), "best_version_by": "evaluation (train prompts)"}


def throughput(run_dir: Path, recs: list[dict]) -> dict[str, list[tuple[float, float]]]:
    """Generator videos/s per round (the round's videos over its generation seconds) and trainer
    rows/s between consecutive optimizer steps, averaged per round."""
    videos: dict[int, int] = {}
    for f in sorted((run_dir / "samples").glob("round_*/*.parquet")):
        r = int(f.parent.name.split("_")[-1])
        videos[r] = videos.get(r, 0) + pq.read_metadata(f).num_rows
    gen = [(r["round"], videos[r["round"]] / r["generate_seconds"]) for r in recs
           if r.get("event") == "round" and r.get("generate_seconds") and videos.get(r["round"])]
    steps = [r for r in recs if r.get("event") == "step" and "time" in r]
    per_round: dict[int, list[float]] = {}
    for a, b in zip(steps, steps[1:]):
        if b["round"] == a["round"] and b["time"] > a["time"]:
            per_round.setdefault(b["round"], []).append(b["rows"] / (b["time"] - a["time"]))
    train = [(k, float(np.mean(v))) for k, v in sorted(per_round.items())]
    return {"generator videos/s": gen, "trainer rows/s": train}


def eval_summaries(run_dir: Path) -> list[dict]:
    out = []
    for f in sorted((run_dir / "eval").glob("v*/summary.json")):
        s = json.loads(f.read_text())
        s["dir"] = str(f.parent)
        out.append(s)
    return sorted(out, key=lambda s: s["policy_version"])


def write_report(run_dir: str | Path, max_prompts: int = 6, max_seeds: int = 3) -> Path:
    run_dir = Path(run_dir)
    cfg_text = (run_dir / "config.yaml").read_text() if (run_dir / "config.yaml").is_file() else ""
    recs = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()] \
        if (run_dir / "metrics.jsonl").is_file() else []
    steps = [r for r in recs if r.get("event") == "step"]
    parts = [f"<h1>ipo-ray run report</h1><p>run directory: <code>{html.escape(str(run_dir))}</code></p>"]
    summary_file = run_dir / "summary.json"
    summary_text = summary_file.read_text() if summary_file.is_file() else ""
    if summary_text:
        parts.append("<h2>Summary</h2><pre>" + html.escape(summary_text) + "</pre>")
    summary = json.loads(summary_text) if summary_text else {}
    note = summary.get("best_version_note")
    ra = summary.get("rollouts") or rollout_acceptance(run_dir)  # the run's own basis (focus: common prompts)
    by_eval = str(summary.get("best_version_by", "")).startswith("evaluation")
    r = None if note or by_eval else best_rollout(ra)
    if by_eval:
        parts.append(f"<p>Best version by the evaluation below, on its train prompts (fixed prompts and seeds; the "
                     f"held-out split never chooses): <b>v{summary['best_version']}</b> (<code>--version best</code>). "
                     + (f"The rollouts could not choose: {html.escape(summary['rollouts_no_best'].split(': ', 1)[-1])}."
                        if summary.get("rollouts_no_best") else "") + "</p>")
    if note:
        parts.append(f"<p>{html.escape(note)}.</p>")
    if r is not None:
        parts.append(f"<p>Best version by its own rollouts (the critic's scores, training prompts, fresh seeds): "
                     f"<b>v{r['policy_version']}</b>, acceptance {r['acceptance']:.3f} over {r['n']} videos"
                     + (f" of the {r['prompts']} prompts every version rolled out" if "prompts" in r else "") + " "
                     f"(<code>--version best</code>). The evaluation below is independent of this choice.</p>")
    evals = eval_summaries(run_dir)
    charts = [
        svg_lines({"loss": [(r["step"], r.get("loss", np.nan)) for r in steps]}, "training loss per optimizer step"),
        svg_lines({"implicit accuracy": [(r["step"], r.get("implicit_acc", np.nan)) for r in steps]},
                  "implicit accuracy (DPO/KTO)"),
        svg_lines({"rollout acceptance": [(r["policy_version"], r["acceptance"]) for r in ra],
                   "rollout mean score": [(r["policy_version"], r["mean_score"]) for r in ra]},
                  "rollouts per policy version (critic scores)"),
        svg_lines({split: [(e["policy_version"], e[split]["acceptance"]) for e in evals if split in e]
                   for split in ("train", "heldout")}, "eval acceptance per checkpoint (score >= 0.8)"),
        svg_lines(throughput(run_dir, recs), "throughput per round (generator videos/s, trainer rows/s)"),
    ]
    parts.append("<h2>Curves</h2><div class='charts'>" + "".join(charts) + "</div>")
    if evals:
        rows = "".join(
            f"<tr><td>v{e['policy_version']}</td>" + "".join(
                f"<td>{e[s]['acceptance']:.3f} ({e[s]['n']})</td><td>{e[s]['mean_score']:.3f}</td>" if s in e
                else "<td>-</td><td>-</td>" for s in ("train", "heldout"))
            + f"<td>{e.get('temporal_flicker', float('nan')):.4f}</td><td>{e.get('dynamic_degree', float('nan')):.3f}</td>"
            f"<td>{e.get('motion_smoothness', float('nan')):.4f}</td></tr>" for e in evals)
        parts.append("<h2>Evaluation</h2><table><tr><th>checkpoint</th><th>train acceptance (n)</th><th>train mean</th>"
                     "<th>held-out acceptance (n)</th><th>held-out mean</th><th>temporal flicker</th>"
                     f"<th>dynamic degree</th><th>motion smoothness</th></tr>{rows}</table>")
        parts.append(_video_grid(evals, max_prompts, max_seeds))
    if ra:
        parts.append("<h2>Rollouts</h2><table><tr><th>policy version</th><th>videos</th><th>acceptance</th>"
                     "<th>mean score</th></tr>" + "".join(
                         f"<tr><td>v{r['policy_version']}</td><td>{r['n']}</td><td>{r['acceptance']:.3f}</td>"
                         f"<td>{r['mean_score']:.3f}</td></tr>" for r in ra) + "</table>")
    parts.append("<h2>Config</h2><pre>" + html.escape(cfg_text) + "</pre>")
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>ipo-ray report</title><style>"
            "body{font-family:sans-serif;margin:24px;max-width:1200px} table{border-collapse:collapse;margin:8px 0}"
            "td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px} .charts{display:flex;flex-wrap:wrap;gap:12px}"
            "img.v{image-rendering:pixelated;width:96px;height:96px;margin:1px} pre{background:#f6f6f6;padding:8px}"
            "</style></head><body>" + "".join(parts) + "</body></html>")
    out = run_dir / "report.html"
    out.write_text(page)
    return out


def _video_grid(evals: list[dict], max_prompts: int, max_seeds: int) -> str:
    tables = {}
    for e in evals:
        f = Path(e["dir"]) / "samples.parquet"
        if f.is_file():
            tables[e["policy_version"]] = pq.read_table(f).to_pylist()
    if not tables:
        return ""
    first = next(iter(tables.values()))
    prompts = list(dict.fromkeys(r["prompt"] for r in first))[:max_prompts]
    head = "".join(f"<th>v{v}</th>" for v in tables)
    body = []
    for p in prompts:
        cells = []
        for v, rows in tables.items():
            rs = [r for r in rows if r["prompt"] == p][:max_seeds]
            cells.append("<td>" + "".join(
                f"<img class='v' src='{_gif_uri(r['video_path'])}' title='seed {r['seed']} score {r['score']:.2f}'>"
                for r in rs) + "<br>" + " ".join(f"{r['score']:.2f}" for r in rs) + "</td>")
        body.append(f"<tr><td>{html.escape(p)}</td>{''.join(cells)}</tr>")
    return ("<h2>Videos: same prompts and seeds, base and each checkpoint</h2>"
            f"<table><tr><th>prompt</th>{head}</tr>{''.join(body)}</table>")
