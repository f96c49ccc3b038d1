#!/usr/bin/env bash
# Checks the dependency rules of ARCHITECTURE.md that the compiler cannot:
#   - the coordinator never links libtorch (tch / torch-sys);
#   - crypto, ledger, models, datasets and proto never depend on the coordinator or the worker;
#   - the shipped binary (`cargo build -p fedchain-cli`) has no crash-test failpoints.
set -euo pipefail
cd "$(dirname "$0")/.."
fail=0
deps() { cargo tree --locked -q -e normal,build -p "$1" --prefix none | awk '{print $1}' | sort -u; }

if deps fedchain-coordinator | grep -qxE 'tch|torch-sys'; then
  echo "check-deps: fedchain-coordinator depends on libtorch (tch/torch-sys); it must not" >&2
  cargo tree -q -p fedchain-coordinator -i tch >&2 || true
  fail=1
fi
for c in fedchain-crypto fedchain-ledger fedchain-models fedchain-datasets fedchain-proto; do
  if bad=$(deps "$c" | grep -xE 'fedchain-(coordinator|worker)'); then
    echo "check-deps: $c depends on $bad; the dependency must point the other way" >&2
    fail=1
  fi
done
if cargo tree --locked -q -e features -p fedchain-cli -i fedchain-coordinator | grep -q '"failpoints"'; then
  echo "check-deps: the fedchain binary would be built with the coordinator's failpoints; only tests may turn them on" >&2
  fail=1
fi
[ "$fail" -eq 0 ] && echo "check-deps: ok (coordinator free of libtorch; library crates independent of coordinator/worker; no failpoints in the binary)"
exit "$fail"
