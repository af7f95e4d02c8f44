#!/usr/bin/env python3
"""Per-function TurboFan compile time (Node's V8, as a proxy for Envoy's) by crate and by size.

Usage: compiletrace.py UNSTRIPPED.wasm TRACE.txt [TOP]
TRACE.txt: the output of
  nice -n 19 node --no-liftoff --no-wasm-lazy-compilation --single-threaded \
    --trace-wasm-compilation-times compile.js STRIPPED_OR_UNSTRIPPED.wasm
(the same build with and without `strip`: function indices match).
"""
import collections
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wasmsize import crate_of, demangle, parse  # noqa: E402

wasm, trace = sys.argv[1], sys.argv[2]
top = int(sys.argv[3]) if len(sys.argv) > 3 else 30
_, bodies, names, nimp = parse(wasm)
rows = []
for line in open(trace):
    m = re.match(r"Compiled function \S+#(\d+) using TurboFan, took (\d+) ms.*bodysize (\d+) codesize (\d+)", line)
    if m:
        idx, ms, body, code = map(int, m.groups())
        rows.append((ms, body, code, demangle(names.get(idx, f"func{idx}"))))
tot = sum(r[0] for r in rows)
print(f"{len(rows)} functions, {tot} ms summed (1 ms resolution), {sum(r[1] for r in rows):,} body bytes, "
      f"{sum(r[2] for r in rows):,} machine-code bytes")
by = collections.defaultdict(lambda: [0, 0, 0])
for ms, body, code, nm in rows:
    c = by[crate_of(nm)]
    c[0] += ms
    c[1] += body
    c[2] += 1
print("\n| crate | compile ms | % | body bytes | functions |\n|---|---|---|---|---|")
for c, (ms, body, n) in sorted(by.items(), key=lambda x: (-x[1][0], -x[1][1]))[:top]:
    print(f"| {c} | {ms} | {100.0 * ms / max(tot, 1):.1f} | {body:,} | {n} |")
print("\n| body size | functions | body bytes | compile ms | ms per KB |\n|---|---|---|---|---|")
for lo, hi in [(0, 256), (256, 1024), (1024, 4096), (4096, 8192), (8192, 1 << 30)]:
    sel = [r for r in rows if lo <= r[1] < hi]
    b = sum(r[1] for r in sel)
    ms = sum(r[0] for r in sel)
    print(f"| {lo}..{hi if hi < 1 << 30 else ''} | {len(sel)} | {b:,} | {ms} | {1024.0 * ms / max(b, 1):.2f} |")
print("\n| function | body bytes | compile ms |\n|---|---|---|")
for ms, body, code, nm in sorted(rows, reverse=True)[:top]:
    print(f"| `{nm[:120]}` | {body:,} | {ms} |")
