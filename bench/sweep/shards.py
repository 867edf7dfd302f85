"""torchrun's sharded sweep: each rank writes results.rank<r>.csv; rank 0 folds them into results.csv."""
from __future__ import annotations

import os

from bench import schema


def _shard_files(out_dir: str) -> list[str]:
    import glob
    return sorted(glob.glob(os.path.join(out_dir, "results.rank*.csv")))


def merge_shards(out_dir: str) -> int:
    """Fold every results.rank<r>.csv into results.csv (a point measured twice keeps its last ok row) and
    remove them; returns the number of rows merged.  results.csv is replaced atomically first."""
    files = _shard_files(out_dir)
    if not files:
        return 0
    csv_path = os.path.join(out_dir, "results.csv")
    rows = {}
    for path in [csv_path, *files]:
        for r in schema.read_rows(path)[0]:
            key = schema.row_key(r)
            if r["status"] == "ok" or rows.get(key, {}).get("status") != "ok":
                rows[key] = r
    writer = schema.RowWriter(csv_path, list(rows.values()))
    writer.close()
    for path in files:
        os.remove(path)
    return len(rows)
