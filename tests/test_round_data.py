"""A round's rows read back from Parquet: the same blocks whatever the files' split and order, and the
same blocks from the driver read (small rounds) and from Ray Data's distributed sort (large rounds)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import pyarrow.parquet as pq

from ipo_ray.rows import ROW_FIELDS, rows_table

from .conftest import ROOT

READ = """
import json, os, sys, ray
from ipo_ray.round_data import read_round
ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=False)
def blocks(ds):
    return [b.column("row_id").to_pylist() for b in ds.iter_batches(batch_size=None, batch_format="pyarrow")]
out = {}
for d in sys.argv[1:]:
    out[d] = {"driver": blocks(read_round(d))}
out["ray"] = blocks(read_round(sys.argv[1], driver_max_bytes=0))  # the distributed sort, once (its waves are slow)
print("BLOCKS" + json.dumps(out))
"""


def _rows(n: int) -> list[dict]:
    return [dict.fromkeys(ROW_FIELDS) | {"row_id": f"r000-p{i:05d}-s{7 * i % 13}", "kind": "point", "group_id": f"g{i // 4}", "prompt": "a red circle falls down",
             "round": 0, "policy_version": 0, "sample_id": f"s{i}", "seed": i, "score": i / n, "latents": bytes([i % 256]) * 16,
             "desirable": i % 3 == 0, "reward": i / n, "critic": "world", "latent_shape": [16], "latent_dtype": "uint8"}
            for i in range(n)]


def _write(directory, rows, cuts, seed):
    """``rows`` shuffled, cut into files of the given sizes, named so that listing order is random too."""
    rows = rows[:]
    random.Random(seed).shuffle(rows)
    directory.mkdir()
    start = 0
    for k, n in enumerate(cuts):
        pq.write_table(rows_table(rows[start:start + n]), directory / f"{random.Random(seed * 100 + k).getrandbits(32):08x}.parquet")
        start += n
    assert start == len(rows)


def test_round_rows_come_back_in_the_same_blocks_whatever_the_files(ray_local, tmp_path):
    rows = _rows(62)
    a, b = tmp_path / "a", tmp_path / "b"
    _write(a, rows, [3, 9, 1, 20, 4, 25], seed=1)
    _write(b, rows, [10, 10, 2, 15, 15, 10], seed=2)
    proc = subprocess.run([sys.executable, "-c", READ, str(a), str(b)], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=os.environ | {"RAY_ADDRESS": ray_local.get_runtime_context().gcs_address, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.split("BLOCKS", 1)[1])
    want = sorted(r["row_id"] for r in rows)
    first = out[str(a)]["driver"]
    assert len(first) == 6  # one block per file, cut by row count
    assert sorted(len(x) for x in first) == [10, 10, 10, 10, 11, 11]  # cut evenly by row count
    assert [r for blk in first for r in blk] == want  # every row once, sorted
    assert out[str(b)]["driver"] == first  # other files, other listing order: the same blocks
    assert out["ray"] == first  # Ray Data's distributed sort cuts the same blocks
