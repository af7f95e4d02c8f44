## ---- fuzzing ---------------------------------------------------------------------------------
# cargo-fuzz (libFuzzer) targets in fuzz/ over the harness in filter/core/src/fuzzing.rs (feature
# `fuzzing`); the same functions run on stable, seeded and short, in `cargo test`
# (filter/core/tests/fuzz_props.rs).
#
#   make fuzz                                    every target for FUZZ_SECONDS (600) each, one after another
#   make fuzz FUZZ_TARGETS=jcs FUZZ_SECONDS=60   one target, one minute
#
# Installs what it needs: the nightly toolchain (rustup) and cargo-fuzz (crates.io, default cargo root).
# Each target starts from its committed seeds (fuzz/seeds/<target>/, read only) and what earlier
# runs found (fuzz/corpus/<target>/, ignored by git). A crash, timeout or out-of-memory input is
# written to fuzz/artifacts/<target>/ (reproduce:
# cargo +nightly fuzz run --fuzz-dir fuzz --sanitizer none --debug-assertions <target> <file>).
# Per target: executions and crashes, printed and written to target/fuzz-summary.txt (full
# libFuzzer output: target/fuzz-<target>.log). Fails when any target crashed.

FUZZ_SECONDS ?= 600
FUZZ_TARGETS ?= token jcs config headers mission_status set_feed authzen
# Longest one input may run before libFuzzer reports it as a timeout (a hang is a finding too).
FUZZ_TIMEOUT ?= 10
FUZZ_SUMMARY := target/fuzz-summary.txt
# No sanitizer: the crates fuzzed have no `unsafe`, and AddressSanitizer would halve the speed of the
# signature-heavy targets. Overflow checks on (-a): an overflow is a finding (it wraps silently in
# the release filter).
FUZZ_BUILD_FLAGS := --fuzz-dir fuzz --sanitizer none --debug-assertions

.PHONY: fuzz fuzz-build fuzz-tools

fuzz-tools:
	@rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked

fuzz-build: fuzz-tools
	$(CARGO) +nightly fuzz build $(FUZZ_BUILD_FLAGS)

fuzz: fuzz-build
	@mkdir -p target
	@echo "fuzz: $(FUZZ_SECONDS) s per target, $$(date -u +%Y-%m-%dT%H:%M:%SZ), commit $$(git rev-parse --short HEAD 2>/dev/null || echo '?')" > $(FUZZ_SUMMARY)
	@failed=0; \
	for t in $(FUZZ_TARGETS); do \
	  [ -d fuzz/seeds/$$t ] || { echo "fuzz: no target $$t (fuzz/seeds/$$t missing)" | tee -a $(FUZZ_SUMMARY); failed=1; continue; }; \
	  mkdir -p fuzz/corpus/$$t fuzz/artifacts/$$t; \
	  before=$$(ls fuzz/artifacts/$$t | wc -l); \
	  echo "fuzz: $$t for $(FUZZ_SECONDS) s (log: target/fuzz-$$t.log)"; \
	  rc=0; \
	  $(CARGO) +nightly fuzz run $(FUZZ_BUILD_FLAGS) $$t fuzz/corpus/$$t fuzz/seeds/$$t -- \
	    -max_total_time=$(FUZZ_SECONDS) -timeout=$(FUZZ_TIMEOUT) -print_final_stats=1 \
	    -artifact_prefix=fuzz/artifacts/$$t/ > target/fuzz-$$t.log 2>&1 || rc=$$?; \
	  execs=$$(sed -n 's/^stat::number_of_executed_units: *//p' target/fuzz-$$t.log | tail -n 1); \
	  crashes=$$(( $$(ls fuzz/artifacts/$$t | wc -l) - before )); \
	  if [ $$rc -ne 0 ] && [ $$crashes -eq 0 ]; then crashes=1; fi; \
	  corpus=$$(ls fuzz/corpus/$$t | wc -l); \
	  line="$$t: executions=$${execs:-?} crashes=$$crashes corpus=$$corpus exit=$$rc"; \
	  if [ $$crashes -ne 0 ]; then \
	    line="$$line artifacts: $$(ls -t fuzz/artifacts/$$t | head -n $$crashes | sed "s|^|fuzz/artifacts/$$t/|" | tr '\n' ' ')"; \
	    failed=1; \
	  fi; \
	  echo "$$line" | tee -a $(FUZZ_SUMMARY); \
	done; \
	echo "fuzz: summary in $(FUZZ_SUMMARY)"; \
	exit $$failed
