"""Writes a synthetic requests.parquet of N rows in schema aifb.requests/1 (footer included),
with 8 stages of a closed-loop sweep and log-normal latencies.

usage: gen.py ROWS OUT.parquet [SEED]
"""
import json
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

rows, out = int(sys.argv[1]), sys.argv[2]
seed = int(sys.argv[3]) if len(sys.argv) > 3 else 1
rng = np.random.default_rng(seed)
stages = 8
per = rows // stages
S = 1_000_000_000
windows, batches = [], []
writer = None
schema_meta = {b"aifb.schema": b"aifb.requests/1"}
for st in range(stages):
    users = 2 ** st
    start = st * 60 * S
    w = {"stage": st, "concurrency": users, "start_ns": start, "measure_start_ns": start + 5 * S,
         "measure_end_ns": start + 55 * S, "end_ns": start + 60 * S}
    windows.append(w)
    sent = np.sort(rng.integers(start, start + 60 * S, per))
    lat = (rng.lognormal(mean=np.log(0.05 * (1 + st / 4)), sigma=0.4, size=per) * S).astype(np.int64)
    ttft = (lat * 0.1).astype(np.int64)
    ok = rng.random(per) > 0.001
    phase = np.where(sent < w["measure_start_ns"], 0, np.where(sent < w["measure_end_ns"], 1, 2))
    ts = pa.timestamp("ns", tz="UTC")
    dict_str = lambda idx, values: pa.DictionaryArray.from_arrays(pa.array(idx, pa.int32()), pa.array(values))
    table = pa.table({
        "stage": pa.array(np.full(per, st, np.uint32)),
        "concurrency": pa.array(np.full(per, users, np.uint32)),
        "rate": pa.array([None] * per, pa.float64()),
        "phase": dict_str(phase, ["warmup", "measure", "cooldown"]),
        "client": dict_str(np.zeros(per, np.int32), ["local"]),
        "worker": pa.array((np.arange(per) % users).astype(np.uint32)),
        "op": dict_str(np.zeros(per, np.int32), ["chat"]),
        "t_intended": pa.array(sent, ts),
        "t_sent": pa.array(sent, ts),
        "t_first_byte": pa.array(sent + ttft // 2, ts),
        "t_first_token": pa.array(sent + ttft, ts),
        "t_end": pa.array(sent + lat, ts),
        "ok": pa.array(ok),
        "status": pa.array(np.where(ok, 200, 503).astype(np.uint16)),
        "error": pa.DictionaryArray.from_arrays(pa.array(np.where(ok, None, 0), pa.int32()), pa.array(["http_5xx"])),
        "bytes_sent": pa.array(np.full(per, 400, np.uint64)),
        "bytes_received": pa.array(np.full(per, 9000, np.uint64)),
        "prompt_tokens": pa.array(np.full(per, 64, np.uint32)),
        "output_tokens": pa.array(np.full(per, 64, np.uint32)),
        "chunks": pa.array(np.full(per, 64, np.uint32)),
        "request_id": pa.array([f"r{st}-{i}" for i in range(per)]),
    })
    if writer is None:
        writer = pq.ParquetWriter(out, table.schema.with_metadata(schema_meta), compression="zstd")
    writer.write_table(table.replace_schema_metadata(schema_meta), row_group_size=1 << 20)
manifest = {"id": "BM-20260101-000000-beef", "name": "synthetic", "aifb_version": "bench", "status": "DONE",
            "executor": "local", "nodes": ["n1"], "started_at": "2026-01-01T00:00:00.000Z",
            "environment": {"hostname": "", "kernel": "", "cpu": "cpu", "cpus": 2}, "processes": [],
            "pattern": "closed", "workload_hash": "0000000000000000", "stages": windows}
writer.add_key_value_metadata({"aifb.schema": "aifb.requests/1", "aifb.run": json.dumps(manifest)})
writer.close()
print(f"wrote {per * stages} rows to {out}")
