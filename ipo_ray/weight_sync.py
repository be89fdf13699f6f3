"""Weight-sync transports: how a new ``policy_version`` travels from trainer rank 0 to rollout actors.

A small contract (after NeMo-RL's ``weight_sync/interfaces.py``): the trainer calls ``publish``,
a rollout actor calls ``pull_if_newer``; staleness bookkeeping stays in the loop. The object-store
transport below works on any cluster: rank 0 puts the state dict in Ray's object store once, and the
weight store actor hands out the reference. On GPU clusters a collective transport (NCCL broadcast
through ``ray.util.collective`` between rank 0 and the rollout actors) can implement the same two
methods; it is not built yet.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod

import ray
import torch

STORE_NAME = "ipo_ray_weight_store"


def state_bytes(state: dict[str, torch.Tensor]) -> int:
    return int(sum(t.numel() * t.element_size() for t in state.values()))


class WeightTransport(ABC):
    @abstractmethod
    def publish(self, version: int, state: dict[str, torch.Tensor], meta: dict) -> dict:
        """Make ``state`` available as ``version``; returns {'bytes', 'seconds'}."""

    @abstractmethod
    def pull_if_newer(self, have_version: int) -> tuple[int, dict[str, torch.Tensor] | None, dict]:
        """``(version, state or None, meta)``: the state only when newer than ``have_version``."""


class ObjectStoreTransport(WeightTransport):
    def __init__(self, store_name: str = STORE_NAME, namespace: str | None = None):
        self.store = ray.get_actor(store_name, namespace=namespace)

    def publish(self, version, state, meta):
        t0 = time.time()
        ref = ray.put(state)
        info = {"bytes": state_bytes(state), "seconds": 0.0}
        ray.get(self.store.publish.remote(version, [ref], {**meta, **info}))
        info["seconds"] = time.time() - t0
        return info

    def pull_if_newer(self, have_version):
        version, refs, meta = ray.get(self.store.latest.remote())
        if version <= have_version or refs[0] is None:
            return version, None, meta
        return version, ray.get(refs[0]), meta
