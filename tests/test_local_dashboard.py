"""The main job's local Ray cluster (``jobs/loop.py`` ``init_ray`` without RAY_ADDRESS) has a dashboard, on
loopback only, behind token auth, and its state API answers: Ray Train's placement-group cleaner polls that
API every second of training and, without a dashboard, logged a warning each time (~450 lines a default run).

The cluster is a second local Ray started by a child process with its own token file; the session
cluster of ``conftest.py`` is not touched.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys

from .conftest import ROOT, http_get

CHILD = """
import json, sys
import ray
from ray.util.state import get_actor
from jobs.loop import init_ray

init_ray(num_cpus=1)
node = ray._private.worker.global_worker.node
gcs = ray.get_runtime_context().gcs_address

@ray.remote(num_cpus=0)
class Probe:
    def ping(self):
        return 1

probe = Probe.remote()
ray.get(probe.ping.remote())
state = get_actor(probe._actor_id.hex(), address=gcs, timeout=30)
print(json.dumps({"url": node.address_info["webui_url"], "gcs": gcs, "actor": state.state}), flush=True)
sys.stdin.readline()  # the test's HTTP checks run now; closing stdin ends the cluster
ray.shutdown()
"""


def test_local_job_cluster_has_a_loopback_token_auth_dashboard(tmp_path):
    token = secrets.token_hex(32)
    token_file = tmp_path / "auth_token"
    token_file.write_text(token)
    token_file.chmod(0o600)
    env = dict(os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token_file),
               PYTHONPATH=str(ROOT))
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen([sys.executable, "-c", CHILD], cwd=tmp_path, env=env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        line = proc.stdout.readline()
        assert line, proc.stderr.read()[-3000:]
        info = json.loads(line)
        assert info["gcs"].startswith("127.0.0.1:")
        host, port = info["url"].split(":")
        assert host == "127.0.0.1" and int(port) >= 8265, info
        assert info["actor"] == "ALIVE"  # the state API the placement-group cleaner polls
        api = f"http://{info['url']}"
        assert http_get(f"{api}/api/version", token, timeout=30)[0] == 200
        assert http_get(f"{api}/api/jobs/", None, timeout=30)[0] == 401  # token auth stays on
        assert http_get(f"{api}/api/jobs/", token, timeout=30)[0] == 200
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
