#!/usr/bin/env python3
"""Prints criterion's medians (and GiB/s where a throughput was set) for the benches just run.

Usage: python3 benches/summary.py [GROUP ...]   (reads target/criterion/)
"""
import json
import pathlib
import sys

root = pathlib.Path(__file__).resolve().parent.parent / "target" / "criterion"
groups = sys.argv[1:] or sorted(p.name for p in root.iterdir() if p.is_dir() and p.name != "report")
for group in groups:
    for bench in sorted((root / group).glob("**/new/benchmark.json")):
        meta = json.loads(bench.read_text())
        est = json.loads((bench.parent / "estimates.json").read_text())
        median_ns = est["median"]["point_estimate"]
        tp = meta.get("throughput") or {}
        line = f"{meta['full_id']:<50} median {median_ns / 1e6:10.3f} ms"
        if "Bytes" in tp:
            line += f"  {tp['Bytes'] / median_ns * 1e9 / 2**30:8.2f} GiB/s"
        print(line)
