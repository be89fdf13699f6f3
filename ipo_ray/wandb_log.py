"""wandb logging of a run: the same throughput / training metrics as the Ray metrics, plus sample
videos per round (DESIGN §6). Offline by default; never allowed to break a run.

The loop's driver owns one ``WandbLogger``. It does not sit in the hot path: a daemon thread tails
``RUN_DIR/metrics.jsonl`` (what the trainer's rank 0 and the loop already write) every
``wandb.poll_seconds`` and logs new records; ``round_end`` logs the round's acceptance, throughput
and a few judged videos (best and worst of the first groups, from ``RUN_DIR/samples``).

    wandb_mode: offline   (default) files under RUN_DIR/wandb; upload later with `wandb sync`
    wandb_mode: online    needs `wandb login` or WANDB_API_KEY on the driver's node
    wandb_mode: disabled  nothing is imported or written
The environment variable WANDB_MODE, when set, wins over the config (handy with runtime_env).

Every call is wrapped: if wandb is missing, cannot start, or fails mid-run, one warning is printed
and the logger turns itself off.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Callable

from .config import Config

ACCEPT = 0.8  # the world judge's acceptance threshold (ipo_ray.world.ACCEPT), kept import-light here

# metrics.jsonl events -> wandb key prefix
_PREFIX = {"step": "train", "sync": "sync", "trainer_done": "trainer", "round": "round", "stream_done": "pipeline"}


def wandb_mode(cfg: Config) -> str:
    mode = (os.environ.get("WANDB_MODE") or cfg.wandb_mode).strip().lower()
    return {"off": "disabled", "false": "disabled", "dryrun": "offline"}.get(mode, mode)


def _numeric(rec: dict, prefix: str, skip=("event", "time")) -> dict:
    return {f"{prefix}/{k}": float(v) for k, v in rec.items()
            if k not in skip and isinstance(v, (int, float)) and not isinstance(v, bool)}


class WandbLogger:
    def __init__(self, cfg: Config, run_dir: str | Path, log: Callable = print):
        self.cfg, self.run_dir, self.log = cfg, Path(run_dir), log
        self.mode = wandb_mode(cfg)
        self.enabled = self.mode in ("offline", "online")
        self.run = None
        self._wandb = None
        self._offset = 0
        self._last_step_time: float | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._stats_fn: Callable[[], dict] | None = None
        self._t0 = time.time()

    # ------------------------------------------------------------------ lifecycle
    def start(self, resume: bool = False, stats_fn: Callable[[], dict] | None = None) -> "WandbLogger":
        """Open the wandb run (RUN_DIR/wandb) and start the tailing thread. No-op when disabled."""
        if not self.enabled:
            return self
        self._stats_fn = stats_fn
        self._guard(self._start, resume)
        if self.run is not None and self.cfg.wandb.poll_seconds > 0:
            self._thread = threading.Thread(target=self._poll_loop, name="ipo-ray-wandb", daemon=True)
            self._thread.start()
        return self

    def _start(self, resume: bool) -> None:
        import wandb

        w = self.cfg.wandb
        id_file = self.run_dir / "wandb_id.txt"
        # Online runs continue the same wandb run on --resume; offline ones start a new one (wandb cannot
        # resume offline runs), synced side by side.
        run_id = id_file.read_text().strip() if resume and self.mode == "online" and id_file.is_file() else None
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if resume:  # records already logged before the restart are not logged twice
            self._offset = int((self.run_dir / "wandb_offset.txt").read_text()) \
                if (self.run_dir / "wandb_offset.txt").is_file() else 0
        settings = wandb.Settings(silent=True, console="off", x_disable_stats=True, disable_git=True,
                                  save_code=False, disable_job_creation=True, init_timeout=w.init_timeout_s)
        self.run = wandb.init(mode=self.mode, project=w.project, entity=w.entity, group=w.group,
                              name=w.run_name or f"{self.cfg.name}-{self.run_dir.name}", tags=list(w.tags) or None,
                              dir=str(self.run_dir), config=self.cfg.model_dump(mode="json"), id=run_id,
                              resume="allow" if run_id else None, settings=settings, reinit="create_new")
        self._wandb = wandb
        id_file.write_text(self.run.id)
        for x, keys in (("train/step", ("train/*", "sync/*")), ("round/round", ("round/*", "videos/*", "trainer/*")),
                        ("pipeline/seconds", ("pipeline/*",))):
            self.run.define_metric(x)
            for k in keys:
                self.run.define_metric(k, step_metric=x)
        where = self.run.dir if self.mode == "offline" else self.run.url
        self.log(f"wandb ({self.mode}): {where}")

    def finish(self, summary: dict | None = None, failed: bool = False) -> None:
        """Log what is left and close the run (``failed``: the loop raised; wandb marks the run failed)."""
        if self.run is None:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._guard(self.poll)
        if summary:
            self._guard(lambda: self.run.summary.update(_numeric(summary, "run", skip=())))
        self._guard(lambda: self.run.finish(exit_code=1 if failed else 0))
        # finish() returns before wandb's service has written the offline log; tearing the service
        # down flushes it, so RUN_DIR/wandb is complete when the loop returns (a later init restarts it).
        self._guard(self._wandb.teardown)
        self.run = None

    # ------------------------------------------------------------------ logging
    def poll(self) -> None:
        """Log the metrics.jsonl records written since the last poll (and the pipeline stats)."""
        if self.run is None:
            return
        with self._lock:
            f = self.run_dir / "metrics.jsonl"
            if f.is_file():
                with open(f, "rb") as fh:
                    fh.seek(self._offset)
                    data = fh.read()
                end = data.rfind(b"\n") + 1  # only whole lines; a half-written one waits for the next poll
                for line in data[:end].splitlines():
                    if line.strip():
                        self._log_record(json.loads(line))
                self._offset += end
                tmp = self.run_dir / "wandb_offset.txt.tmp"  # a torn offset would turn wandb off on resume
                tmp.write_text(str(self._offset))
                os.replace(tmp, self.run_dir / "wandb_offset.txt")
            if self._stats_fn is not None:
                stats = self._stats_fn()
                if stats:
                    rec = _numeric({k: v for k, v in stats.items() if k != "staleness"}, "pipeline")
                    self.run.log(rec | {"pipeline/seconds": time.time() - self._t0})

    def _log_record(self, rec: dict) -> None:
        event = rec.get("event", "other")
        prefix = _PREFIX.get(event, event)
        out = _numeric(rec, prefix)
        if event == "step":
            t = rec.get("time")
            if t is not None and self._last_step_time is not None and t > self._last_step_time:
                out["train/samples_per_second"] = float(rec.get("rows", 0)) / (t - self._last_step_time)
            self._last_step_time = t
        elif event == "sync":
            out["train/step"] = float(rec.get("step", 0))
        elif event == "trainer_done":
            out["round/round"] = float(rec.get("round", 0))
            hist = rec.get("staleness_hist") or {}
            if hist:
                counts = [int(hist[k]) for k in sorted(hist, key=int)]
                out["trainer/staleness_hist"] = self._wandb.Histogram(
                    np_histogram=(counts, [i - 0.5 for i in range(len(counts) + 1)]))
        elif event == "round":
            out["round/round"] = float(rec.get("round", 0))
            out["round/syncs"] = float(len(rec.get("syncs") or []))
        self.run.log(out)

    def round_end(self, r: int) -> None:
        """After round ``r``: new metrics, the round's acceptance and throughput, sample videos."""
        if self.run is None:
            return
        self._guard(self.poll)
        self._guard(self._log_round, r)

    def _log_round(self, r: int) -> None:
        import pyarrow.parquet as pq

        files = sorted((self.run_dir / "samples" / f"round_{r:03d}").glob("*.parquet"))
        if not files:
            return
        rows = [x for f in files for x in pq.read_table(f, columns=["sample_id", "group_id", "prompt", "score",
                                                                        "policy_version", "video_path"]).to_pylist()]
        scores = [float(x["score"]) for x in rows]
        out = {"round/round": float(r), "round/videos": float(len(rows)),
               "round/acceptance_rate": sum(s >= ACCEPT for s in scores) / max(1, len(scores)),
               "round/mean_score": sum(scores) / max(1, len(scores))}
        gen = [x for x in self._round_records(r) if x.get("generate_seconds")]
        if gen:  # rollout wall time: generation and judging of the round, all actors together
            out["round/rollout_videos_per_second"] = len(rows) / float(gen[-1]["generate_seconds"])
        groups: dict[str, list[dict]] = {}
        for x in rows:
            groups.setdefault(x["group_id"], []).append(x)
        videos = []
        for g in sorted(groups)[: self.cfg.wandb.videos_per_round // 2]:
            ranked = sorted(groups[g], key=lambda x: (x["score"], x["sample_id"]))
            for x, tag in ((ranked[-1], "best"), (ranked[0], "worst"))[: min(2, len(ranked))]:
                if x["video_path"] and Path(x["video_path"]).is_file():
                    videos.append(self._wandb.Video(x["video_path"], caption=f"{tag} {x['score']:.2f} "
                                                    f"v{x['policy_version']}: {x['prompt']}"))
        if videos:
            out["videos/samples"] = videos
        self.run.log(out)

    def _round_records(self, r: int) -> list[dict]:
        from .run_dir import RunDir

        return [x for x in RunDir(self.run_dir).read_metrics() if x.get("event") == "round" and x.get("round") == r]

    # ------------------------------------------------------------------ safety
    def _poll_loop(self) -> None:
        while not self._stop.wait(self.cfg.wandb.poll_seconds):
            self._guard(self.poll)

    def _guard(self, fn, *args) -> None:
        if not self.enabled:
            return
        try:
            fn(*args)
        except Exception as exc:  # noqa: BLE001 - wandb must never take a run down
            self.enabled = False
            self.log(f"warning: wandb logging turned off: {type(exc).__name__}: {exc}")
            run, self.run = self.run, None
            if run is not None:
                try:
                    run.finish(exit_code=1)
                    self._wandb.teardown()  # flush the offline log of what was logged before the error
                except Exception:  # noqa: BLE001
                    pass
