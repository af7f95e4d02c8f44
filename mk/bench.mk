## ---- benchmark -------------------------------------------------------------------------------
#   make bench        the full bench (a few minutes): bench/results/latest.{md,json,png}
#   make bench-smoke  the same harness with tiny durations (about half a minute), into target/bench-smoke,
#                     then checks the report has every row; `make test` runs it so the bench cannot rot.
# The bench is tests/src/bin/bench.rs with envoy/bench.yaml; bench/README.md says how to read the results.
# Settings (environment): BENCH_ROUNDS (3), BENCH_DURATION (s per round, 5), BENCH_WARMUP (s, 2),
# BENCH_CONNECTIONS (8), BENCH_COLD_TOKENS (40000), BENCH_STARTS (3), BENCH_REVOCATIONS (100), BENCH_OUT,
# BENCH_ENVOY_CPU (0), BENCH_LOAD_CPU (1), BENCH_WASM (another build of the filter, measured in its place).
# Run nothing else on the machine meanwhile (2 cores: Envoy gets one, the load the other).

BENCH_SMOKE_OUT := target/bench-smoke
BENCH_SMOKE_ENV := BENCH_ROUNDS=1 BENCH_DURATION=1 BENCH_WARMUP=0 BENCH_STARTS=1 BENCH_REVOCATIONS=3 \
                   BENCH_COLD_TOKENS=64 BENCH_OUT=$(BENCH_SMOKE_OUT)

.PHONY: wrk

wrk:
	@command -v wrk >/dev/null || (apt-get update && apt-get install -y wrk)

bench: tools wasm wrk
	$(CARGO) build -p captive-portal || echo "bench: captive-portal does not build: revocation latency will not be measured"
	$(CARGO) build --release -p missiongate-tests --bin bench
	target/release/bench > /dev/null
	target/release/bench --check "$${BENCH_OUT:-bench/results}"
	@echo "bench: $${BENCH_OUT:-bench/results}/latest.md, latest.json, latest.png"

bench-smoke: tools wasm wrk
	$(CARGO) build -p captive-portal
	$(CARGO) build -p missiongate-tests --bin bench
	@$(BENCH_SMOKE_ENV) target/debug/bench > $(BENCH_SMOKE_OUT).log 2>&1 || { tail -n 60 $(BENCH_SMOKE_OUT).log; exit 1; }
	target/debug/bench --check $(BENCH_SMOKE_OUT)

