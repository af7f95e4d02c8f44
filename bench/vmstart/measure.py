#!/usr/bin/env python3
"""CPU time of Envoy from start to /ready, per .wasm variant, interleaved (VMSTART-FINDINGS.md).

Usage: measure.py REPS NAME=PATH [NAME=PATH ...]
  PATH `-` means Envoy without any Wasm listener (the bench's native config); otherwise every
  missiongate listener of the bench's start-filter config loads PATH (one VM, vm_id missiongate).
  `plain:PATH` also replaces each listener's configuration with the string "empty" (the reference filter).

For each repetition, every variant is started once, in turn (interleaved), with `--concurrency 1`.
Reported per variant: the median and min of the Envoy process's utime+stime (all threads, from
/proc/<pid>/stat, 10 ms ticks) when /ready first answers 200, and the wall time (noisy on a loaded host).
Run it under `nice -n 19` on a shared host.
"""
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ENVOY = os.environ.get("ENVOY_BIN", "/work/main/.venv/bin/envoy")
TICK = os.sysconf("SC_CLK_TCK")


def free(port):
    import socket
    with socket.socket() as so:
        try:
            so.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def render(tmpl, wasm, plain=False):
    text = open(os.path.join(HERE, tmpl)).read()
    if plain:
        # The reference filter takes a plain string ("empty"), not missiongate's JSON.
        text = re.sub(r'(\n( +)value: \|\n)(?:\2  .*\n)+', r'\n\2value: "empty"\n', text)
    used = set()

    def port(_m):
        while True:
            p = random.randint(40000, 49999)
            if p not in used and free(p):
                used.add(p)
                return f"port_value: {p}"

    text = re.sub(r"port_value: \d+", port, text)
    if wasm:
        text = re.sub(r"filename: \S+\.wasm", f"filename: {os.path.abspath(wasm)}", text)
    admin = int(re.search(r"admin:\s*\n\s*address: \{ socket_address: \{ address: 127.0.0.1, port_value: (\d+)", text).group(1))
    return text, admin


def cpu_ms(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000.0 / TICK


def one(wasm, extra):
    tmpl = "native.tmpl.yaml" if wasm == "-" else "filter.tmpl.yaml"
    plain = wasm.startswith("plain:")
    wasm = wasm.removeprefix("plain:")
    text, admin = render(tmpl, None if wasm == "-" else wasm, plain)
    with tempfile.TemporaryDirectory() as d:
        cfg = os.path.join(d, "envoy.yaml")
        open(cfg, "w").write(text)
        log = open(os.path.join(d, "envoy.log"), "w")
        t0 = time.monotonic()
        p = subprocess.Popen(
            ["nice", "-n", "19", ENVOY, "-c", cfg, "--concurrency", "1", "--disable-hot-restart",
             "--base-id", str(random.randint(1000, 60000)), "-l", "warning"] + extra,
            stdout=log, stderr=subprocess.STDOUT)
        try:
            while True:
                if p.poll() is not None:
                    raise RuntimeError(f"envoy exited {p.returncode}: {open(os.path.join(d, 'envoy.log')).read()[-2000:]}")
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/ready", timeout=1) as r:
                        if r.status == 200:
                            break
                except Exception:
                    pass
                time.sleep(0.005)
            wall = (time.monotonic() - t0) * 1000
            cpu = cpu_ms(p.pid)
            if os.environ.get("THREADS"):
                for t in sorted(os.listdir(f"/proc/{p.pid}/task")):
                    try:
                        comm = open(f"/proc/{p.pid}/task/{t}/comm").read().strip()
                        print(f"  thread {t} {comm}: {cpu_ms(f'{p.pid}/task/{t}'):.0f} ms", file=sys.stderr)
                    except OSError:
                        pass
        finally:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            keep = os.environ.get("KEEP_LOG")
            if keep:
                import shutil
                shutil.copy(os.path.join(d, "envoy.log"), keep)
    return cpu, wall


def main():
    reps = int(sys.argv[1])
    variants = [a.split("=", 1) for a in sys.argv[2:]]
    extra = os.environ.get("ENVOY_EXTRA", "").split()
    res = {n: ([], []) for n, _ in variants}
    for i in range(reps):
        order = variants[:] if i % 2 == 0 else variants[::-1]
        for n, w in order:
            for attempt in range(3):
                try:
                    c, wl = one(w, extra)
                    break
                except RuntimeError as e:
                    if "Address already in use" not in str(e) or attempt == 2:
                        raise
            res[n][0].append(c)
            res[n][1].append(wl)
            print(f"rep {i} {n}: cpu {c:.0f} ms wall {wl:.0f} ms", file=sys.stderr, flush=True)
    base = None
    print(f"| variant | .wasm bytes | CPU to /ready, median (min..max) ms | wall median ms | n |")
    print("|---|---|---|---|---|")
    for n, w in variants:
        c, wl = res[n]
        size = "-" if w == "-" else f"{os.path.getsize(w.removeprefix('plain:')):,}"
        print(f"| {n} | {size} | {statistics.median(c):.0f} ({min(c):.0f}..{max(c):.0f}) | {statistics.median(wl):.0f} | {len(c)} |")


if __name__ == "__main__":
    main()
