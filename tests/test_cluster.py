"""cluster/: the manifests parse and name real files; the Grafana dashboard queries only our metrics;
``ray job submit`` of jobs/train.py to a token-auth Ray head on 127.0.0.1 succeeds while that head's
Prometheus endpoint shows the project's metrics with non-zero values; wandb logs offline and never
takes a run down.

The job test starts its own head as separate processes (``ray start --head --block`` in a new
session, its own --temp-dir, ports and token file) and ends exactly those processes; it never calls
ray.init in the pytest process, so the session's ``ray_local`` cluster is untouched.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from ipo_ray.telemetry import COUNTERS, GAUGES, HISTOGRAMS, prometheus_names

from .conftest import ROOT, TINY, http_get

CLUSTER = ROOT / "cluster"
DOCS = [CLUSTER / "README.md", ROOT / "docs" / "CLUSTER.md"]
REPO_PATH = re.compile(r"(?<![\w/.-])((?:jobs|configs|cluster|ipo_ray|actors|docs|tests)/[\w./-]*\w)")


def _load_all(name: str) -> list:
    return [d for d in yaml.safe_load_all((CLUSTER / name).read_text()) if d is not None]


def _repo_paths(text: str) -> set[str]:
    return {m.rstrip(".") for m in REPO_PATH.findall(text)}


def _python_entrypoint(cmd: str) -> tuple[str, list[str]]:
    argv = shlex.split(cmd)
    assert argv[0] == "python", cmd
    return argv[1], argv[2:]


def _validate_train_args(args: list[str]) -> None:
    """The entrypoint's --config exists and, with its --set overrides, validates."""
    from ipo_ray.config import load_config

    config = args[args.index("--config") + 1]
    sets = [args[i + 1] for i, a in enumerate(args) if a == "--set"]
    assert (ROOT / config).is_file(), config
    load_config(ROOT / config, sets)


# ---------------------------------------------------------------------------------------------- (a)
def test_cluster_manifests_parse_and_name_existing_entrypoints():
    # Launcher: AWS, GPU workers, token auth on every ray start, the token shipped to every node.
    (launcher,) = _load_all("gpu-cluster.yaml")
    assert launcher["provider"]["type"] == "aws"
    types = launcher["available_node_types"]
    assert launcher["head_node_type"] in types
    gpu_types = [t for t in types.values() if re.match(r"(g|p)\d", t["node_config"]["InstanceType"])]
    assert gpu_types and all(t["max_workers"] >= t["min_workers"] >= 1 for t in gpu_types)
    starts = launcher["head_start_ray_commands"] + launcher["worker_start_ray_commands"]
    ray_starts = [c for c in starts if "ray start" in c]
    assert len(ray_starts) == 2 and all("RAY_AUTH_MODE=token ray start" in c for c in ray_starts)
    assert "--metrics-export-port=" in ray_starts[0] and "--head" in ray_starts[0]
    assert "~/.ray/auth_token" in launcher["file_mounts"]

    # KubeRay: the shared volume claim and a RayJob running jobs/train.py with the cogvideox-2b preset.
    docs = _load_all("rayjob.yaml")
    kinds = {d["kind"]: d for d in docs}
    assert set(kinds) == {"PersistentVolumeClaim", "RayJob"}
    job = kinds["RayJob"]
    assert job["apiVersion"] == "ray.io/v1"
    script, args = _python_entrypoint(job["spec"]["entrypoint"])
    assert script == "jobs/train.py" and (ROOT / script).is_file()
    assert args[args.index("--config") + 1] == "configs/cogvideox-2b.yaml"
    _validate_train_args(args)
    spec = job["spec"]["rayClusterSpec"]
    assert spec["authOptions"]["mode"] == "token"
    assert spec["rayVersion"] == __import__("ray").__version__
    claim = kinds["PersistentVolumeClaim"]["metadata"]["name"]
    pods = [spec["headGroupSpec"]["template"]["spec"]] + [g["template"]["spec"] for g in spec["workerGroupSpecs"]]
    for pod in pods:
        assert any(v.get("persistentVolumeClaim", {}).get("claimName") == claim for v in pod["volumes"])
    assert all(g["template"]["spec"]["containers"][0]["resources"]["limits"].get("nvidia.com/gpu")
               for g in spec["workerGroupSpecs"])
    runtime_env = yaml.safe_load(job["spec"]["runtimeEnvYAML"])
    dockerfile = (CLUSTER / "Dockerfile").read_text()
    assert f"WORKDIR {runtime_env['working_dir']}" in dockerfile
    for src in re.findall(r"^COPY\s+(?:--\S+\s+)*(.+?)\s+\S+$", dockerfile, re.M):
        for p in src.split():
            assert (ROOT / p).exists(), f"Dockerfile copies missing {p}"

    # The job runtime env for `ray job submit --runtime-env`.
    rt = yaml.safe_load((CLUSTER / "runtime_env.yaml").read_text())
    assert ".git" in rt["excludes"] and all(isinstance(v, str) for v in rt["env_vars"].values())
    assert "pip" not in rt and "working_dir" not in rt

    # Every repository path the manifests and docs name exists; every `python jobs/...` they show
    # names a real entrypoint and a config that validates with the shown overrides.
    texts = [(CLUSTER / n).read_text() for n in ("gpu-cluster.yaml", "rayjob.yaml", "runtime_env.yaml", "Dockerfile")]
    texts += [p.read_text() for p in DOCS]
    named = set().union(*(_repo_paths(t) for t in texts))
    assert {"jobs/train.py", "configs/cogvideox-2b.yaml", "cluster/gpu-cluster.yaml", "cluster/rayjob.yaml",
            "cluster/runtime_env.yaml", "cluster/grafana/ipo_ray_dashboard.json"} <= named
    missing = sorted(p for p in named if not (ROOT / p).exists())
    assert not missing, f"named but not in the repo: {missing}"
    for text in texts:
        flat = re.sub(r"\\\n[#\s]*", " ", text)  # join continued lines, also inside YAML comments
        for cmd in re.findall(r"python (jobs/\w+\.py[^\n`]*)", flat):
            argv = shlex.split(cmd)
            assert (ROOT / argv[0]).is_file(), argv[0]
            if "--config" in argv:
                _validate_train_args(argv[1:])


def test_grafana_dashboard_queries_only_defined_metrics():
    path = CLUSTER / "grafana" / "ipo_ray_dashboard.json"
    dash = json.loads(path.read_text())
    sys.path.insert(0, str(CLUSTER / "grafana"))
    try:
        import make_dashboard
    finally:
        sys.path.remove(str(CLUSTER / "grafana"))
    assert path.read_text() == make_dashboard.render(), "regenerate: python cluster/grafana/make_dashboard.py"
    assert {v["name"] for v in dash["templating"]["list"]} == {"datasource", "SessionName"}
    known = prometheus_names()
    queried: set[str] = set()
    panels = [p for p in dash["panels"] if p["type"] != "row"]
    assert panels
    for p in panels:
        assert p["datasource"]["type"] == "prometheus" and p["targets"], p["title"]
        for t in p["targets"]:
            names = set(re.findall(r"\bray_ipo_ray_\w+", t["expr"]))
            assert names, (p["title"], t["expr"])
            unknown = names - set(known)
            assert not unknown, f"{p['title']}: {sorted(unknown)} is not a metric ipo_ray/telemetry.py defines"
            queried |= names
    # ... and every metric telemetry.py defines has a panel.
    assert {known[n] for n in queried} == set(COUNTERS) | set(GAUGES) | set(HISTOGRAMS)
    # panels do not overlap on the grid
    cells = set()
    for p in dash["panels"]:
        g = p["gridPos"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, p["title"]
                cells.add((x, y))


# ---------------------------------------------------------------------------------------------- wandb
def _fake_run(run: Path, n_groups: int = 2, k: int = 3) -> None:
    """A run directory with what the loop writes: metrics.jsonl records and judged samples with videos."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ipo_ray.video import save_sample

    recs = [{"event": "step", "step": s, "loss": 1.0 / s, "implicit_acc": 0.5, "rows": 8, "dropped_stale": 0,
             "staleness_mean": 0.0, "idle_fraction": 0.2, "time": 100.0 + s} for s in (1, 2, 3)]
    recs += [{"event": "sync", "version": 1, "step": 3, "bytes": 1234, "seconds": 0.01},
             {"event": "trainer_done", "round": 0, "step": 3, "staleness_hist": {"0": 24, "1": 0}},
             {"event": "round", "round": 0, "rows": 24, "version": 1, "generate_seconds": 2.0, "seconds": 5.0,
              "syncs": [{"version": 1}]}]
    run.mkdir(parents=True)
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    rng = np.random.default_rng(0)
    rows = []
    for g in range(n_groups):
        for i in range(k):
            sid = f"r000-p{g:05d}-s{i}"
            frames = rng.integers(0, 255, (4, 8, 8, 3), dtype=np.uint8)
            _, gif = save_sample(frames, run / "videos" / "round_000" / sid)
            rows.append({"sample_id": sid, "group_id": f"r000-p{g:05d}", "prompt": f"prompt {g}", "score": i / k,
                         "policy_version": 0, "video_path": gif})
    (run / "samples" / "round_000").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), run / "samples" / "round_000" / "part-0.parquet")


def test_wandb_logger_offline_logs_metrics_and_videos_and_never_raises(tmp_path, monkeypatch):
    from ipo_ray.wandb_log import WandbLogger

    from .conftest import tiny_config

    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home" / var.lower()))
    monkeypatch.delenv("WANDB_MODE", raising=False)
    logs: list[str] = []

    # offline (the default): metrics.jsonl records, pipeline stats and the round's videos are logged
    cfg = tiny_config("wandb.videos_per_round=4", "wandb.poll_seconds=0")
    assert cfg.wandb_mode == "offline"
    run = tmp_path / "run"
    _fake_run(run)
    w = WandbLogger(cfg, run, log=logs.append).start(stats_fn=lambda: {"outstanding_rows": 5, "staleness": {0: 1}})
    w.round_end(0)
    w.finish({"seconds": 5.0, "mode": "rounds"})
    assert w.enabled, logs
    (offline,) = (run / "wandb").glob("offline-run-*")
    gifs = sorted((offline / "files" / "media").rglob("*.gif"))
    assert len(gifs) == 4  # best and worst of the first two groups
    data = next(offline.glob("run-*.wandb")).read_bytes()
    for key in ("train/loss", "train/samples_per_second", "sync/bytes", "round/acceptance_rate",
                "round/rollout_videos_per_second", "trainer/staleness_hist", "pipeline/outstanding_rows",
                "videos/samples"):
        assert key.encode() in data, key
    assert int((run / "wandb_offset.txt").read_text()) == (run / "metrics.jsonl").stat().st_size

    # disabled: nothing imported or written
    off = tmp_path / "off"
    _fake_run(off)
    w = WandbLogger(tiny_config("wandb_mode=disabled"), off, log=logs.append).start()
    w.round_end(0)
    w.finish({})
    assert not (off / "wandb").exists()

    # wandb cannot start (its directory is a file): one warning, then a no-op; nothing raises
    broken = tmp_path / "broken"
    _fake_run(broken)
    (broken / "wandb").write_text("not a directory")
    logs.clear()
    w = WandbLogger(cfg, broken, log=logs.append).start()
    w.round_end(0)
    w.finish({"seconds": 1.0})
    assert not w.enabled and w.run is None
    assert len([m for m in logs if m.startswith("warning: wandb logging turned off")]) == 1, logs


# ---------------------------------------------------------------------------------------------- (b)
def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _scrape(port: int) -> tuple[dict[str, float], dict[str, set[str]]]:
    """``ray_ipo_ray_*`` series of one scrape: name -> largest value over its label sets, name -> label keys."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    labels: dict[str, set[str]] = {}
    for line in text.splitlines():
        m = re.match(r"^(ray_ipo_ray_\w+)\{(.*)\}\s+(\S+)$", line)
        if m:
            name, lab, value = m.group(1), m.group(2), float(m.group(3))
            out[name] = max(out.get(name, 0.0), value)
            labels.setdefault(name, set()).update(re.findall(r'(\w+)="', lab))
            assert 'NodeAddress="127.0.0.1"' in lab, line
    return out, labels


def _session_pids(sid: int) -> list[int]:
    pids = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if os.getsid(int(p.name)) == sid:
                    pids.append(int(p.name))
            except (ProcessLookupError, PermissionError):
                pass
    return pids


def _sockets(sid: int) -> tuple[list[str], list[str]]:
    """Inet sockets of our head's processes: (talking to or bound to a non-loopback address,
    listening on a wildcard address). The first must stay empty; the second is reported."""
    import psutil

    bad, wildcard = [], []
    loop = ("127.0.0.1", "::ffff:127.0.0.1", "::1")
    for pid in _session_pids(sid):
        try:
            proc = psutil.Process(pid)
            conns, name = proc.net_connections(kind="inet"), proc.name()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        for c in conns:
            where = f"{name} (pid {pid}): {c.status} {c.laddr.ip}:{c.laddr.port}"
            if c.raddr and c.raddr.ip not in loop:
                bad.append(f"{where} -> {c.raddr.ip}:{c.raddr.port}")
            elif c.laddr.ip in ("0.0.0.0", "::"):
                wildcard.append(where)
            elif c.laddr.ip not in loop:
                bad.append(where)
    return bad, wildcard


@pytest.mark.slow
@pytest.mark.timeout(480)
def test_ray_job_submit_to_token_auth_head_succeeds_and_exports_metrics(tiny_base, tmp_path):
    """3.5-4.5 min on 2 heavily shared cores (head ~15 s, the one-round tiny job 3-4 min); ~2.5 min idle."""
    t_start = time.time()
    tmp = Path(tempfile.mkdtemp(prefix="iprc-", dir="/tmp"))  # short: Ray's unix socket paths live here
    token = secrets.token_hex(32)
    token_file = tmp / "auth_token"
    token_file.write_text(token)
    token_file.chmod(0o600)
    gcs, dash, metrics, client, agent = _free_ports(5)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_TOKEN", "WANDB_"))}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token_file),
               RAY_USAGE_STATS_ENABLED="0",  # no usage report leaves the machine
               RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",  # single-node head: node IP 127.0.0.1, not the NIC's
               RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0")
    ray_bin = str(Path(sys.executable).with_name("ray"))
    ray_bin = ray_bin if os.path.exists(ray_bin) else "ray"
    head_log = open(tmp / "head.log", "wb")
    head = subprocess.Popen(
        [ray_bin, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={gcs}",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", f"--metrics-export-port={metrics}",
         f"--ray-client-server-port={client}", f"--dashboard-agent-listen-port={agent}", "--num-cpus=4",
         f"--temp-dir={tmp / 'ray'}", "--disable-usage-stats"],
        env=env, stdout=head_log, stderr=subprocess.STDOUT, start_new_session=True)
    submit = None
    ok = False
    try:
        api = f"http://127.0.0.1:{dash}"
        deadline = time.time() + 120
        while True:
            assert head.poll() is None, (tmp / "head.log").read_text()[-3000:]
            try:
                if http_get(f"{api}/api/version", token)[0] == 200:
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            assert time.time() < deadline, "Ray head did not come up"
            time.sleep(1)
        t_head = time.time() - t_start
        # Token auth is on: the Jobs API refuses a request without the token.
        assert http_get(f"{api}/api/jobs/", None)[0] == 401
        assert http_get(f"{api}/api/jobs/", token)[0] == 200

        # cluster/runtime_env.yaml plus test-only env: wandb stays offline and out of $HOME.
        rt = yaml.safe_load((CLUSTER / "runtime_env.yaml").read_text())
        rt["env_vars"].update({"WANDB_MODE": "offline", "WANDB_CONFIG_DIR": str(tmp / "wandb-config"),
                               "WANDB_CACHE_DIR": str(tmp / "wandb-cache"), "WANDB_DATA_DIR": str(tmp / "wandb-data")})
        (tmp / "runtime_env.yaml").write_text(yaml.safe_dump(rt))
        run_dir = tmp / "run"
        sets = TINY + [f"model.path={tiny_base}", f"run_dir={run_dir}", "prompts=world:train", "loop.rounds=1",
                       "loop.score_final=false",
                       "loop.prompts_per_round=4", "sampling.num_per_prompt=4", "sampling.steps=2",
                       "sampling.batch_size=8", "train.num_workers=1", "train.batch_size=2",
                       "train.cpus_per_worker=0.5", "algo.min_score_gap=0.0", "loop.epochs_per_round=1",
                       "real_videos=null", "train.real_batch_size=0", "critic.num_cpus=0.25",
                       "loop.generator_cpus=1", "wandb.poll_seconds=5", "wandb.videos_per_round=2",
                       "algo.name=rwr"]  # the RWR path end to end (the loop tests run DPO and KTO)
        sub_id = f"ipo-ray-test-{secrets.token_hex(4)}"
        cmd = [ray_bin, "job", "submit", "--address", api, "--submission-id", sub_id, "--working-dir", ".",
               "--runtime-env", str(tmp / "runtime_env.yaml"), "--", "python", "jobs/train.py",
               "--config", "configs/world-tiny.yaml", *[x for s in sets for x in ("--set", s)], "--no-eval"]
        submit_log = open(tmp / "submit.log", "wb")
        submit = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=submit_log, stderr=subprocess.STDOUT)

        seen: dict[str, float] = {}
        labels: dict[str, set[str]] = {}
        bad_sockets: list[str] = []
        wildcard: set[str] = set()
        while submit.poll() is None:
            assert time.time() - t_start < 420, "job did not finish in time"
            try:
                values, labs = _scrape(metrics)
                for k, v in values.items():
                    seen[k] = max(seen.get(k, 0.0), v)
                    labels.setdefault(k, set()).update(labs[k])
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            bad, wild = _sockets(head.pid)
            bad_sockets += bad
            wildcard.update(wild)
            time.sleep(2)
        out = (tmp / "submit.log").read_text(errors="replace")
        assert submit.returncode == 0, out[-5000:]
        status, body = http_get(f"{api}/api/jobs/{sub_id}", token)
        assert status == 200 and json.loads(body)["status"] == "SUCCEEDED", body[:2000]
        values, labs = _scrape(metrics)  # counters and histograms outlive the job's processes
        for k, v in values.items():
            seen[k] = max(seen.get(k, 0.0), v)
            labels.setdefault(k, set()).update(labs[k])

        # The project's metrics reached Ray's Prometheus export, under the names the dashboard uses.
        assert set(seen) <= set(prometheus_names()), sorted(set(seen) - set(prometheus_names()))
        must = ["ray_ipo_ray_videos_generated_total", "ray_ipo_ray_judgements_total", "ray_ipo_ray_rows_made_total",
                "ray_ipo_ray_samples_trained_total", "ray_ipo_ray_syncs_total", "ray_ipo_ray_step_seconds_count",
                "ray_ipo_ray_generate_seconds_count", "ray_ipo_ray_judge_seconds_count",
                "ray_ipo_ray_sync_seconds_count", "ray_ipo_ray_row_staleness_count",
                "ray_ipo_ray_trainer_idle_seconds_total"]
        zero = [m for m in must if seen.get(m, 0.0) <= 0]
        assert not zero, f"no non-zero value for {zero}; seen {json.dumps(seen, indent=1)}"
        assert 0 < seen["ray_ipo_ray_videos_generated_total"] <= 16
        assert {"role", "WorkerId", "SessionName"} <= labels["ray_ipo_ray_videos_generated_total"]
        assert not bad_sockets, bad_sockets[:10]

        # The job ran the loop to the end: a published policy, wandb offline with the round's videos.
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["final_version"] == 1 and summary["rows_trained"] == 16  # 4 prompts x 4 RWR points
        (offline,) = (run_dir / "wandb").glob("offline-run-*")
        assert list((offline / "files" / "media").rglob("*.gif"))
        # The uploaded working dir is the code, not .git / runs / .cache.
        (pkg,) = [p for p in (tmp / "ray" / "session_latest").glob("runtime_resources/working_dir_files/_ray_pkg_*")
                  if p.is_dir() and (p / "jobs" / "train.py").is_file()]
        files = [f for f in pkg.rglob("*") if f.is_file()]
        assert sum(f.stat().st_size for f in files) < 20 * 2**20
        assert not any(part in (".git", "runs", ".cache", "wandb") for f in files for part in f.relative_to(pkg).parts)
        ok = True
        print(f"\n[test_cluster] head up in {t_head:.0f}s, total {time.time() - t_start:.0f}s; "
              f"metrics seen: {json.dumps(seen)}; wildcard listeners (no remote peer): {sorted(wildcard)}")
    finally:
        if submit is not None and submit.poll() is None:
            submit.kill()
            submit.wait()
        _stop_head(head)
        head_log.close()
        if ok:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"[test_cluster] kept {tmp} for inspection")


def _stop_head(head: subprocess.Popen) -> None:
    """End the head we started and everything it spawned (its own session), nothing else."""
    sid = head.pid  # start_new_session: the head is its session's leader
    if head.poll() is None:
        head.send_signal(signal.SIGTERM)  # ray start --block tears its node down on SIGTERM
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
    deadline = time.time() + 10
    while time.time() < deadline:
        left = _session_pids(sid)
        if not left:
            break
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.5)
    if head.poll() is None:
        head.kill()
    head.wait()
