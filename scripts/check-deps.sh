#!/usr/bin/env bash
# Checks the dependency rules of ARCHITECTURE.md that the compiler cannot:
#   - the coordinator, fedchain-model-core, the fuzz targets and the fedchain-server binary never
#     link libtorch (tch / torch-sys), nor do their tests;
#   - crypto, ledger, model-core, models, datasets and proto never depend on the coordinator or
#     the worker;
#   - the worker, the audit crate, the dashboard and the fuzz targets never depend on the coordinator; fedchain-protocol knows no party;
#   - the shipped binaries (`cargo build -p fedchain-cli -p fedchain-server`) have no crash-test
#     failpoints.
set -euo pipefail
cd "$(dirname "$0")/.."
fail=0
deps() { cargo tree --locked -q -e normal,build -p "$1" --prefix none | awk '{print $1}' | sort -u; }

# Its tests too (dev-dependencies): `make test` builds the whole workspace in one cargo run, so
# only the crate graph, not a feature flag, can keep libtorch out of these test binaries.
for c in fedchain-coordinator fedchain-model-core fedchain-fuzzing fedchain-server; do
  if cargo tree --locked -q -e normal,build,dev -p "$c" --prefix none | awk '{print $1}' | grep -qxE 'tch|torch-sys'; then
    echo "check-deps: $c (or its tests) depends on libtorch (tch/torch-sys); it must not" >&2
    cargo tree --locked -q -e normal,build,dev -p "$c" -i tch >&2 || true
    fail=1
  fi
done
for c in fedchain-crypto fedchain-ledger fedchain-model-core fedchain-models fedchain-datasets fedchain-proto; do
  if bad=$(deps "$c" | grep -xE 'fedchain-(coordinator|worker)'); then
    echo "check-deps: $c depends on $bad; the dependency must point the other way" >&2
    fail=1
  fi
done
# The worker and the auditor's crate learn the rules from fedchain-protocol and fedchain-consortium,
# never from the coordinator: they stand beside it, not on it.
for c in fedchain-worker fedchain-audit fedchain-dashboard fedchain-fuzzing; do
  if deps "$c" | grep -qx 'fedchain-coordinator'; then
    echo "check-deps: $c depends on fedchain-coordinator; take the rule from fedchain-protocol or fedchain-consortium" >&2
    fail=1
  fi
done
# The rules every party recomputes know no party: not the coordinator, the worker or the consortium's
# files, and no libtorch.
if deps fedchain-protocol | grep -qxE 'tch|torch-sys|fedchain-(coordinator|worker|consortium)'; then
  echo "check-deps: fedchain-protocol depends on $(deps fedchain-protocol | grep -xE 'tch|torch-sys|fedchain-(coordinator|worker|consortium)' | tr '\n' ' '); it must know no party" >&2
  fail=1
fi
for c in fedchain-cli fedchain-server; do
  if cargo tree --locked -q -e features -p "$c" -i fedchain-coordinator | grep -q '"failpoints"'; then
    echo "check-deps: $c's binary would be built with the coordinator's failpoints; only tests may turn them on" >&2
    fail=1
  fi
done
[ "$fail" -eq 0 ] && echo "check-deps: ok (coordinator and fedchain-server free of libtorch; library crates independent of coordinator/worker; worker beside the coordinator, not on it; protocol knows no party; no failpoints in the binaries)"
exit "$fail"
