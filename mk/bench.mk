## ---- benchmark -------------------------------------------------------------------------------
#   make bench        the full bench (a few minutes): bench/results/latest.{md,json,png}
#   make bench-smoke  the same harness with tiny durations (about a minute), into target/bench-smoke,
#                     then checks the report has every row; `make test` runs it so the bench cannot rot.
# The bench is tests/src/bin/bench/ with envoy/bench.yaml; bench/README.md says how to read the results.
# Settings (environment): BENCH_ROUNDS (5), BENCH_DURATION (s per round, 5), BENCH_WARMUP (s, 2),
# BENCH_CONNECTIONS (8), BENCH_COLD_TOKENS (40000), BENCH_DPOP_PROOFS (200000), BENCH_STARTS (3),
# BENCH_REVOCATIONS (100), BENCH_OUT, BENCH_ENVOY_CPU (0), BENCH_LOAD_CPU (1), BENCH_WASM (another build
# of the filter, measured in its place), BENCH_QUIET_NONE_RPS (45000: Envoy without a filter on a quiet
# host), BENCH_QUIET_FRACTION (0.6) and BENCH_MAX_SPREAD (0.15): below that fraction of the quiet figure,
# or with per-round ratios spread wider, the report calls the run unreliable.
# The bench also builds the reference filters (bench/reference-filter: an empty Rust proxy-wasm filter
# and one that reads the headers once) and, for the full bench, a counting build of the filter
# (--features hostcalls, into target/hostcalls) whose host calls per request it reports.
# Run nothing else on the machine meanwhile (2 cores: Envoy gets one, the load the other).

BENCH_SMOKE_OUT := target/bench-smoke
BENCH_SMOKE_ENV := BENCH_ROUNDS=1 BENCH_DURATION=2 BENCH_WARMUP=0 BENCH_STARTS=1 BENCH_REVOCATIONS=3 \
                   BENCH_COLD_TOKENS=64 BENCH_DPOP_PROOFS=24000 BENCH_OUT=$(BENCH_SMOKE_OUT) \
                   BENCH_HOSTCALLS_WASM=$(CURDIR)/target/hostcalls/not-built-for-the-smoke-run.wasm

.PHONY: wrk bench-reference bench-hostcalls

bench-reference: wasm-target
	$(CARGO) build --release --target wasm32-wasip1 -p missiongate-bench-reference

bench-hostcalls: wasm-target
	$(CARGO) build --release --target wasm32-wasip1 -p missiongate-filter --features hostcalls --target-dir target/hostcalls

wrk:
	@command -v wrk >/dev/null || (apt-get update && apt-get install -y wrk)

bench: tools wasm wrk postgres bench-reference bench-hostcalls
	$(CARGO) build -p captive-portal || echo "bench: captive-portal does not build: revocation latency will not be measured"
	$(CARGO) build --release -p missiongate-tests --bin bench
	target/release/bench > /dev/null
	target/release/bench --check "$${BENCH_OUT:-bench/results}"
	@echo "bench: $${BENCH_OUT:-bench/results}/latest.md, latest.json, latest.png"

bench-smoke: tools wasm wrk postgres bench-reference
	$(CARGO) build -p captive-portal
	$(CARGO) build -p missiongate-tests --bin bench
	@$(BENCH_SMOKE_ENV) target/debug/bench > $(BENCH_SMOKE_OUT).log 2>&1 || { tail -n 60 $(BENCH_SMOKE_OUT).log; exit 1; }
	target/debug/bench --check $(BENCH_SMOKE_OUT)


# Only the host-call stage: host calls per request on each missiongate path, from the counting build.
# Deterministic (a loaded host does not change it), so it is the figure to compare hot-path changes by.
.PHONY: bench-hostcalls-only
bench-hostcalls-only: tools wasm bench-hostcalls
	$(CARGO) build --release -p missiongate-tests --bin bench
	BENCH_OUT=$${BENCH_OUT:-target/bench-hostcalls} target/release/bench --hostcalls
