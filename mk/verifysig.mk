## ---- verify_signature probe (issue 16 item 3) -------------------------------------------------
#   make verifysig-probe   Envoy's `verify_signature` foreign function (BoringSSL) against the
#                          filter's pure-Rust verifiers (ES256 one-shot and with a table, RS256),
#                          timed interleaved in one VM of a real Envoy: prints us per verification
#                          (min / median over the blocks) and what both paths answer on valid,
#                          tampered, wrong-key and malformed inputs. About 15 s; VERIFYSIG_PROBE
#                          ("<rounds> <per_block>", default "40 20"). VERIFYSIG-FINDINGS.md has the figures.
#                          VERIFYSIG_PROBE="diff 1000": instead, the filter's HostVerifier against the
#                          pure path on pseudo-random ES256 and RS256 inputs; logs the disagreements.

.PHONY: verifysig-probe
verifysig-probe: wasm-target
	$(CARGO) build --release --target wasm32-wasip1 -p missiongate-bench-verifysig
	ENVOY_BIN=$(ENVOY_BIN) bench/verifysig-probe/run.sh "$${VERIFYSIG_PROBE:-40 20}"
