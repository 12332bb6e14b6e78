"""The same per-stage aggregation as `analyzer summary`, in DuckDB or Polars:
per stage, count, measured, failed, throughput over the measured window (from the footer's
stage windows) and p50/p90/p99/p99.9 of service latency of successful measured requests.

usage: peers.py duckdb|polars FILE
"""
import json
import sys

import pyarrow.parquet as pq

tool, path = sys.argv[1], sys.argv[2]
manifest = json.loads(pq.read_metadata(path).metadata[b"aifb.run"])
windows = {w["stage"]: w for w in manifest["stages"]}

if tool == "duckdb":
    import duckdb
    con = duckdb.connect()
    q = f"""
      SELECT stage, count(*) AS requests,
             count(*) FILTER (WHERE phase = 'measure') AS measured,
             count(*) FILTER (WHERE phase = 'measure' AND NOT ok) AS failed,
             quantile_cont(epoch_ns(t_end) - epoch_ns(t_sent), [0.5, 0.9, 0.99, 0.999])
               FILTER (WHERE phase = 'measure' AND ok) AS lat
      FROM read_parquet('{path}') GROUP BY stage ORDER BY stage"""
    rows = con.sql(q).fetchall()
    done = dict(con.sql(f"""
      SELECT stage, count(*) FROM read_parquet('{path}') t
      JOIN (SELECT unnest(?::BIGINT[]) AS s, unnest(?::BIGINT[]) AS a, unnest(?::BIGINT[]) AS b) w ON t.stage = w.s
      WHERE ok AND epoch_ns(t_end) >= a AND epoch_ns(t_end) < b GROUP BY stage""",
      params=[list(windows), [w["measure_start_ns"] for w in windows.values()], [w["measure_end_ns"] for w in windows.values()]]).fetchall())
    out = [(r[0], r[1], r[2], r[3], done.get(r[0], 0), r[4]) for r in rows]
elif tool == "polars":
    import polars as pl
    lf = pl.scan_parquet(path).with_columns(
        (pl.col("t_end").dt.epoch("ns") - pl.col("t_sent").dt.epoch("ns")).alias("lat"),
        pl.col("t_end").dt.epoch("ns").alias("end"),
        pl.col("phase").cast(pl.Utf8),
    )
    w = pl.DataFrame({"stage": list(windows), "a": [x["measure_start_ns"] for x in windows.values()],
                      "b": [x["measure_end_ns"] for x in windows.values()]}).with_columns(pl.col("stage").cast(pl.UInt32))
    m = (pl.col("phase") == "measure")
    agg = lf.join(w.lazy(), on="stage").group_by("stage").agg(
        pl.len().alias("requests"),
        m.sum().alias("measured"),
        (m & ~pl.col("ok")).sum().alias("failed"),
        (pl.col("ok") & (pl.col("end") >= pl.col("a")) & (pl.col("end") < pl.col("b"))).sum().alias("done"),
        *[pl.col("lat").filter(m & pl.col("ok")).quantile(q).alias(f"q{q}") for q in (0.5, 0.9, 0.99, 0.999)],
    ).sort("stage").collect()
    out = [(r["stage"], r["requests"], r["measured"], r["failed"], r["done"], [r[f"q{q}"] for q in (0.5, 0.9, 0.99, 0.999)])
           for r in agg.iter_rows(named=True)]
else:
    sys.exit(f"unknown tool {tool}")

for stage, requests, measured, failed, done, lat in out:
    w = windows[stage]
    secs = (w["measure_end_ns"] - w["measure_start_ns"]) / 1e9
    print(stage, requests, measured, failed, round(done / secs, 2), [round(x / 1e6, 3) for x in lat])
