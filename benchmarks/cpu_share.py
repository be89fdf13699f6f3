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

RAY_KEYS = ("raylet", "gcs_server", "dashboard", "log_monitor", "monitor.py", "runtime_env", "wandb")
ROLES = (  # (role, substrings of the command line); first match wins
    ("trainer", ("RayTrainWorker",)),
    ("generator", ("GeneratorActor",)),
    ("critic", ("CriticActor",)),
    ("ray", ("ray::", "ray/_private") + RAY_KEYS),
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
    head = (cmd.split() or [cmd])[0]
    if head.startswith("ray::"):
        return head.split("(")[0].split(".")[0]
    return next((k for k in RAY_KEYS if k in cmd), head.rsplit("/", 1)[-1][:24])


class CpuShare(threading.Thread):
    """``with CpuShare() as c: ...`` then ``c.seconds`` (role -> CPU-seconds) and ``c.wall``."""

    def __init__(self, interval: float = 1.0):
        super().__init__(daemon=True, name="cpu-share")
        self.interval, self.stop = interval, threading.Event()
        self.first: dict[int, float] = {}  # CPU time at the window's start (processes alive then)
        self.last: dict[int, tuple[str, str, float]] = {}  # pid -> (role, name, CPU time) at its latest sample
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
                self.last[pid] = (role_of(cmd, pid, self.driver), _short(cmd), used)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue

    def run(self) -> None:
        while not self.stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> "CpuShare":
        self._sample()  # processes alive now count from here
        self.first = {pid: used for pid, (_, _, used) in self.last.items()}
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
        for pid, (role, name, used) in self.last.items():
            d = max(0.0, used - self.first.get(pid, 0.0))
            self.seconds[role] = self.seconds.get(role, 0.0) + d
            if role == "ray":
                self.ray_parts[name] = self.ray_parts.get(name, 0.0) + d

    def line(self, cores: int | None = None) -> str:
        """``trainer 170 s, generator 160 s, ... of 436 core-s (2 cores x 218 s)``."""
        cores = cores or psutil.cpu_count() or 1
        order = ["trainer", "generator", "critic", "driver", "ray", "other"]
        top = ", ".join(f"{k} {v:.0f}" for k, v in sorted(self.ray_parts.items(), key=lambda kv: -kv[1])[:4])
        parts = [f"{r} {self.seconds[r]:.0f}" + (f" ({top})" if r == "ray" else "")
                 for r in order if self.seconds.get(r, 0.0) >= 0.5]
        return f"{', '.join(parts)} of {cores * self.wall:.0f} core-s ({cores} cores x {self.wall:.0f} s)"
