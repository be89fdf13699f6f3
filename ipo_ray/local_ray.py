"""Start a single-node Ray cluster that stays on loopback.

``ray.init(_node_ip_address="127.0.0.1")`` alone is not enough in Ray 2.60: a loopback node address
is replaced by the machine's NIC address (``resolve_ip_for_localhost``), so the GCS, the raylet and
every worker talk over e.g. 192.0.2.2. With ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` Ray keeps
127.0.0.1 for the node address, and every process it starts inherits the setting. Only for clusters
this process starts itself: a multi-node cluster must keep routable addresses.
"""

from __future__ import annotations

import os

LOOPBACK = "127.0.0.1"


def init_local_ray(**kwargs) -> str:
    """``ray.init`` a new local cluster bound to 127.0.0.1; returns its GCS address."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    import ray
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False  # read at call time; the env var only at import time
    kwargs.setdefault("dashboard_host", LOOPBACK)  # Ray's default too; a dashboard never listens off loopback
    ray.init(address="local", _node_ip_address=LOOPBACK, **kwargs)
    gcs = ray.get_runtime_context().gcs_address
    if not gcs.startswith(LOOPBACK + ":"):
        ray.shutdown()
        raise RuntimeError(f"local Ray came up on {gcs}, not on {LOOPBACK}; refusing to run off loopback")
    return gcs
