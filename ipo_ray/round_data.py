"""A round's training rows, read back from its Parquet files in an order that does not depend on timing.

The files of a round are listed in write-finish order and Ray Data's read tasks finish in any order, so
the rows are sorted by ``row_id`` and then cut into as many blocks as there are files by row count: each
rank then gets the same rows in the same blocks, and a seed gives the same batches (and a resumed round
the batches of its first try). ``docs/ARCHITECTURE.md`` ("Data path") has the measurements.

A small round (the tiny world's are ~3 MB) is read and sorted in the driver with pyarrow: Ray Data's
distributed sort (sample, shuffle map, reduce, each a wave of tasks) took ~17 s on 2 cores for 62 rows,
the driver read 0.4 s, and both give the same blocks. A round larger than ``driver_max_bytes`` (a GPU
cluster's latents) keeps the distributed read and sort, so no single process has to hold it.
"""

from __future__ import annotations

from pathlib import Path

DRIVER_READ_MAX_BYTES = 256 * 2**20


def read_round(directory: str | Path, driver_max_bytes: int = DRIVER_READ_MAX_BYTES):
    """The rows of ``directory/*.parquet`` as a materialised Ray Dataset: sorted by ``row_id`` and cut into
    one block per file (the same blocks whichever path reads them)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import ray

    files = sorted(Path(directory).glob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"{directory}: no Parquet files to read")
    if sum(f.stat().st_size for f in files) <= driver_max_bytes:
        ds = ray.data.from_arrow(pa.concat_tables([pq.read_table(f) for f in files]).sort_by("row_id"))
    else:
        ds = ray.data.read_parquet(str(directory)).sort("row_id")
    return ds.repartition(len(files)).materialize()
