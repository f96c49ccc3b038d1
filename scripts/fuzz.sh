#!/usr/bin/env bash
# Coverage-guided fuzzing of every decoder of untrusted bytes (fuzz/, targets in fuzzing/):
# cargo fuzz, libFuzzer with AddressSanitizer, each target for FUZZ_SECONDS seconds (default 20),
# starting from a valid encoding of its input (written by `fuzz-seeds`) and the corpus it grew
# before. A crash stops the run: the input is in fuzz/artifacts/TARGET/, and
# `scripts/fuzz.sh TARGET` (or `cargo fuzz run --fuzz-dir fuzz TARGET fuzz/artifacts/TARGET/crash-...`
# with RUSTC_BOOTSTRAP=1) replays it.
#
# Usage: scripts/fuzz.sh [TARGET...]   (no target: all of them)
#
# Why RUSTC_BOOTSTRAP=1: cargo fuzz passes rustc flags that only a nightly compiler accepts
# (-Zsanitizer=address), and these machines can fetch no toolchain but their stable one. The
# variable lets this stable compiler accept them for the fuzz build only (its own target folder,
# fuzz/target); nothing that ships is ever built with it.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_FUZZ_VERSION=0.13.2
if ! cargo fuzz --version 2>/dev/null | grep -qF "$CARGO_FUZZ_VERSION"; then
  echo "[fuzz] installing cargo-fuzz $CARGO_FUZZ_VERSION (once)"
  cargo install --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi

secs=${FUZZ_SECONDS:-20}
if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list --fuzz-dir fuzz)
fi

# Seeds come from the main workspace's ordinary build, so this runs before RUSTC_BOOTSTRAP is set:
# cargo would otherwise rebuild (and replace) the main target folder's artifacts with it.
cargo run -q --locked -p fedchain-fuzzing --bin fuzz-seeds -- fuzz/corpus
export RUSTC_BOOTSTRAP=1
# What a failed build leaves for whoever reads the log: the compiler's own complaint (cc-rs hides it
# among its `cargo:warning` lines, far above the tail), the tail, and the machine's free disk and
# memory, since the usual causes of a C++ compiler failing on libFuzzer's unchanged sources are a full
# disk or a killed compiler.
explain_build_failure() { # $1 = log
  echo "[fuzz] compiler and linker errors:"
  grep -E 'error|fatal|Killed|No space' "$1" | grep -v '^ *[0-9]*: ' | head -n 40 || true
  echo "[fuzz] last lines of the build:"
  tail -n 30 "$1"
  echo "[fuzz] free disk where it builds, and free memory:"
  df -h fuzz/ 2>&1 || true
  free -m 2>&1 || true
}
# One retry, with one job at a time: libFuzzer's C++ is third-party code that compiled here before, so
# a failure that does not repeat came from the machine (memory, a transient I/O error), not from us.
# A failure that repeats stops the run.
echo "[fuzz] building the targets (libFuzzer + AddressSanitizer; minutes the first time)"
log=$(mktemp)
if ! cargo fuzz build --fuzz-dir fuzz >"$log" 2>&1; then
  explain_build_failure "$log"
  echo "[fuzz] the fuzz build failed; retrying once with one job at a time"
  if ! CARGO_BUILD_JOBS=1 cargo fuzz build --fuzz-dir fuzz >"$log" 2>&1; then
    explain_build_failure "$log"
    rm -f "$log"
    echo "[fuzz] the fuzz build failed twice" >&2
    exit 1
  fi
  echo "[fuzz] the retry built the targets"
fi
rm -f "$log"
for t in "${targets[@]}"; do
  echo "[fuzz] $t: ${secs} s"
  log=$(mktemp)
  if ! cargo fuzz run --fuzz-dir fuzz "$t" "fuzz/corpus/$t" -- \
      -max_total_time="$secs" -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 >"$log" 2>&1; then
    tail -n 60 "$log"
    rm -f "$log"
    echo "[fuzz] $t FAILED: the crashing input is in fuzz/artifacts/$t/" >&2
    exit 1
  fi
  # One line per target: how many inputs ran and what coverage the corpus reached.
  runs=$(grep -m1 -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' || echo '?')
  cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 || true)
  echo "[fuzz] $t: ok, $runs inputs, ${cov:-cov: ?} edges, corpus $(ls "fuzz/corpus/$t" | wc -l) files"
  rm -f "$log"
done
