"""Where a machine's cores went while a block of code ran: CPU-seconds per role, from psutil.

A sampler thread reads every process's CPU times every ``interval`` seconds and keeps the last reading
per pid, so a process that exits mid-run (a round's actor pool) counts up to its last sample. Roles are
told apart by process title (Ray names its workers ``ray::<Class>...``), read again at every sample: a
worker starts as ``ray::IDLE`` and becomes an actor later, and its time counts to its last title."""

from __future__ import annotations

import os
import threading
import time

import psutil

ROLES = (  # (role, substrings of the command line); first match wins
    ("trainer", ("RayTrainWorker",)),
    ("generator", ("GeneratorActor",)),
    ("critic", ("CriticActor",)),
    ("ray", ("ray::", "raylet", "gcs_server", "dashboard", "ray/_private", "log_monitor", "monitor.py",
             "runtime_env", "wandb")),
)


def role_of(cmdline: str, pid: int, driver_pid: int) -> str:
    if pid == driver_pid:
        return "driver"
    for role, keys in ROLES:
        if any(k in cmdline for k in keys):
            return role
    return "other"


def _short(cmd: str) -> str:
    """A process's name for the breakdown: ``ray::SplitCoordinator``, ``raylet``, ``dashboard``..."""
    head = cmd.split()[0] if cmd.split() else cmd
    if head.startswith("ray::"):
        return head.split("(")[0].split(".")[0]
    for k in ("raylet", "gcs_server", "dashboard", "log_monitor", "monitor.py", "runtime_env", "wandb"):
        if k in cmd:
            return k
    return head.rsplit("/", 1)[-1][:24]


class CpuShare(threading.Thread):
    """``with CpuShare() as c: ...`` then ``c.seconds`` (role -> CPU-seconds) and ``c.wall``."""

    def __init__(self, interval: float = 1.0):
        super().__init__(daemon=True, name="cpu-share")
        self.interval, self.stop = interval, threading.Event()
        self.first: dict[int, float] = {}
        self.last: dict[int, tuple[str, float]] = {}
        self.title: dict[int, str] = {}
        self.driver = os.getpid()

    def _sample(self) -> None:
        for p in psutil.process_iter(["pid", "cmdline", "name", "cpu_times"]):
            try:
                t = p.info["cpu_times"]
                if t is None:
                    continue
                used = t.user + t.system
                pid = p.info["pid"]
                cmd = " ".join(p.info["cmdline"] or []) or (p.info["name"] or "")
                self.first.setdefault(pid, used if self.started_at_start else 0.0)
                self.last[pid] = (role_of(cmd, pid, self.driver), used)
                self.title[pid] = _short(cmd)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue

    def run(self) -> None:
        while not self.stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> "CpuShare":
        self.started_at_start = True
        self._sample()  # processes alive now count from here
        self.started_at_start = False
        self.t0 = time.time()
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.join()
        self._sample()
        self.wall = time.time() - self.t0
        self.seconds: dict[str, float] = {}
        self.ray_parts: dict[str, float] = {}
        for pid, (role, used) in self.last.items():
            d = max(0.0, used - self.first.get(pid, 0.0))
            self.seconds[role] = self.seconds.get(role, 0.0) + d
            if role == "ray":
                self.ray_parts[self.title[pid]] = self.ray_parts.get(self.title[pid], 0.0) + d

    def line(self, cores: int | None = None) -> str:
        """``trainer 170 s, generator 160 s, ... of 436 core-s (2 cores x 218 s)``."""
        cores = cores or psutil.cpu_count() or 1
        order = ["trainer", "generator", "critic", "driver", "ray", "other"]
        parts = [f"{r} {self.seconds.get(r, 0.0):.0f}" for r in order if self.seconds.get(r, 0.0) >= 0.5]
        top = sorted(self.ray_parts.items(), key=lambda kv: -kv[1])[:4]
        if top and "ray" in [r for r in order if self.seconds.get(r, 0.0) >= 0.5]:
            parts[[p.split()[0] for p in parts].index("ray")] += " (" + ", ".join(f"{k} {v:.0f}" for k, v in top) + ")"
        return f"{', '.join(parts)} of {cores * self.wall:.0f} core-s ({cores} cores x {self.wall:.0f} s)"
