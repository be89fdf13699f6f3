"""benchmarks/cpu_share.py: the loop benchmark's CPU-seconds per role, on a real local Ray cluster."""

import os
import time

from benchmarks.cpu_share import CpuShare, role_of


def test_titles_map_to_roles():
    assert role_of("ray::RayTrainWorker._RayTrainWorker__execute.get_next", 5, 1) == "trainer"
    assert role_of("ray::MapWorker(MapBatches(GeneratorActor)).submit", 5, 1) == "generator"
    assert role_of("ray::MapWorker(MapBatches(CriticActor))", 5, 1) == "critic"
    assert role_of("ray::SplitCoordinator.start_epoch", 5, 1) == "ray"
    assert role_of("/usr/bin/python -m pytest", 1, 1) == "driver"
    assert role_of("/usr/sbin/sshd", 5, 1) == "other"


def test_an_actor_that_spins_is_counted_to_its_role_and_the_total_fits_the_cores(ray_local):
    ray = ray_local

    @ray.remote(num_cpus=1)
    class GeneratorActor:
        def spin(self, seconds: float) -> float:
            t0 = time.process_time()
            end = time.time() + seconds
            while time.time() < end:
                pass
            return time.process_time() - t0

    with CpuShare(interval=0.2) as cpu:
        # Ray may hand the actor a worker it started earlier as ray::IDLE: its time must still count here.
        actor = GeneratorActor.remote()
        used = ray.get(actor.spin.remote(2.0))
    ray.kill(actor)
    assert used > 1.5  # the actor had a core to itself for most of the 2 s
    assert used - 0.3 <= cpu.seconds["generator"] <= used + 3.0  # plus the worker's start, if it started here
    assert sum(cpu.seconds.values()) <= cpu.wall * (os.cpu_count() or 1) + 0.5
    assert "generator" in cpu.line() and "core-s" in cpu.line()
