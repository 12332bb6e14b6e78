"""Opens a run's Parquet files with pyarrow and checks the documented columns and types."""
import json
import sys

import pyarrow as pa
import pyarrow.parquet as pq

run = sys.argv[1]
ts_ns = pa.timestamp("ns", tz="UTC")
requests = {
    "stage": pa.uint32(), "concurrency": pa.uint32(), "rate": pa.float64(),
    "phase": "dict", "client": "dict", "worker": pa.uint32(), "op": "dict",
    "t_intended": ts_ns, "t_sent": ts_ns, "t_first_byte": ts_ns, "t_first_token": ts_ns, "t_end": ts_ns,
    "ok": pa.bool_(), "status": pa.uint16(), "error": "dict",
    "bytes_sent": pa.uint64(), "bytes_received": pa.uint64(),
    "prompt_tokens": pa.uint32(), "output_tokens": pa.uint32(), "chunks": pa.uint32(),
    "request_id": pa.string(),
}
metrics = {"t": pa.timestamp("ms", tz="UTC"), "source": "dict", "metric": "dict", "labels": "map", "value": pa.float64()}

problems = []
for name, spec, schema_name in [("requests", requests, "aifb.requests/1"), ("metrics", metrics, "aifb.metrics/1")]:
    path = f"{run}/{name}.parquet"
    table = pq.read_table(path)
    meta = pq.read_metadata(path).metadata or {}
    if meta.get(b"aifb.schema") != schema_name.encode():
        problems.append(f"{path}: aifb.schema is {meta.get(b'aifb.schema')!r}")
    run_meta = json.loads(meta.get(b"aifb.run", b"{}"))
    if not run_meta.get("id", "").startswith("BM-"):
        problems.append(f"{path}: aifb.run has no run id")
    if table.column_names != list(spec):
        problems.append(f"{path}: columns {table.column_names} != {list(spec)}")
    for col, want in spec.items():
        if col not in table.column_names:
            continue
        got = table.schema.field(col).type
        ok = (pa.types.is_dictionary(got) and pa.types.is_string(got.value_type)) if want == "dict" else \
             pa.types.is_map(got) if want == "map" else got == want
        if not ok:
            problems.append(f"{path}: {col} is {got}, expected {want}")
    if table.num_rows == 0:
        problems.append(f"{path}: no rows")

print("\n".join(problems) if problems else "pyarrow: requests.parquet and metrics.parquet match the documented schemas")
sys.exit(1 if problems else 0)
