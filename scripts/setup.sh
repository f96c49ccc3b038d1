#!/usr/bin/env bash
# Sets up everything fedchain needs to build and run, on a fresh Debian/Ubuntu machine or an
# existing one. Idempotent: a second run checks and changes nothing.
#
#   - system packages: a C/C++ toolchain (libtorch's glue is C++), GMP (for Paillier), Python venv
#   - .venv with torch==2.11.0 from PyPI (the version tch 0.24.0 requires; the CUDA build, so the
#     same setup uses the GPU on a hospital's CUDA machine), and .venv/libtorch -> its torch/ folder,
#     which .cargo/config.toml hands to the build as LIBTORCH; safetensors, for the README's PyTorch lines;
#     pydicom and numpy, test-only: an independent reader of the DICOM files fedchain writes
#   - protoc is not needed: the proto crate builds with a vendored protoc (protoc-bin-vendored)
#
# Environment:
#   FEDCHAIN_PYTHON         Python interpreter to create the venv with (default: python3)
#   FEDCHAIN_TORCH_INDEX    extra pip index URL for torch, e.g. https://download.pytorch.org/whl/cpu
#                           for a CPU-only wheel (default: PyPI only)
set -euo pipefail

TORCH_VERSION=2.11.0
SAFETENSORS_VERSION=0.8.0
PYDICOM_VERSION=3.0.1
NUMPY_VERSION=2.3.5
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

say() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] error: %s\n' "$*" >&2; exit 1; }

# --- Rust ------------------------------------------------------------------------------------------
command -v cargo >/dev/null 2>&1 || die "cargo not found. Install Rust (https://rustup.rs): \
curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh, then open a new shell."

# --- System packages -------------------------------------------------------------------------------
have_header() { # $1 = header name
  printf '#include <%s>\n' "$1" | cc -E -x c - >/dev/null 2>&1
}
missing=()
command -v cc >/dev/null 2>&1 || missing+=(gcc)
command -v c++ >/dev/null 2>&1 || missing+=(g++)
command -v make >/dev/null 2>&1 || missing+=(make)
command -v cc >/dev/null 2>&1 && { have_header gmp.h || missing+=(libgmp-dev); }
python="${FEDCHAIN_PYTHON:-python3}"
command -v "$python" >/dev/null 2>&1 || missing+=(python3)
if command -v "$python" >/dev/null 2>&1 && [ ! -x .venv/bin/python ]; then
  "$python" -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
fi
# A real headless browser for the dashboard's tests (driven over WebDriver).
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
if [ ${#missing[@]} -gt 0 ]; then
  if ! command -v apt-get >/dev/null 2>&1; then
    die "missing: ${missing[*]}. This script installs them with apt-get on Debian/Ubuntu; on this \
system install the equivalent packages (C/C++ compiler, GMP headers, Python 3 with venv, Chromium and \
its WebDriver) and re-run."
  fi
  if [ "$(id -u)" -eq 0 ]; then
    sudo=()
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo=(sudo -n)
  else
    die "missing system packages: ${missing[*]}. Installing them needs root; run as root, or ask an \
administrator to run: apt-get install -y ${missing[*]}"
  fi
  say "installing system packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi
have_header gmp.h || die "GMP headers still missing after install (gmp.h); install libgmp-dev"

# --- Python venv with torch ------------------------------------------------------------------------
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import sys' >/dev/null 2>&1; then
  say "creating .venv with $("$python" --version 2>&1)"
  rm -rf .venv
  "$python" -m venv .venv
fi
torch_installed() {
  .venv/bin/python - "$TORCH_VERSION" <<'PY' 2>/dev/null
import sys, importlib.metadata as md
v = md.version("torch")
sys.exit(0 if v.split("+")[0] == sys.argv[1] else 1)
PY
}
if ! torch_installed; then
  say "installing torch==$TORCH_VERSION into .venv (a large download the first time)"
  extra=()
  [ -n "${FEDCHAIN_TORCH_INDEX:-}" ] && extra=(--extra-index-url "$FEDCHAIN_TORCH_INDEX")
  .venv/bin/python -m pip install -q --disable-pip-version-check "${extra[@]}" "torch==$TORCH_VERSION" \
    || die "pip could not install torch==$TORCH_VERSION (needs network access to PyPI and Python 3.10-3.14)"
  torch_installed || die "torch==$TORCH_VERSION did not install correctly in .venv"
fi
# safetensors: the README's few lines of PyTorch that load a released model (tested by readme.rs).
if ! .venv/bin/python -c 'import importlib.metadata as md, sys; sys.exit(md.version("safetensors") != sys.argv[1])' \
    "$SAFETENSORS_VERSION" >/dev/null 2>&1; then
  say "installing safetensors==$SAFETENSORS_VERSION into .venv"
  .venv/bin/python -m pip install -q --disable-pip-version-check "safetensors==$SAFETENSORS_VERSION" \
    || die "pip could not install safetensors==$SAFETENSORS_VERSION (needs network access to PyPI)"
fi
# pydicom (with numpy, which its pixel decoding needs): test-only, an independent reader that
# cross-checks the DICOM files `fedchain data split --format dicom` writes.
for pkg in "pydicom==$PYDICOM_VERSION" "numpy==$NUMPY_VERSION"; do
  if ! .venv/bin/python -c 'import importlib.metadata as md, sys; n, v = sys.argv[1].split("=="); sys.exit(md.version(n) != v)' \
      "$pkg" >/dev/null 2>&1; then
    say "installing $pkg into .venv (test-only)"
    .venv/bin/python -m pip install -q --disable-pip-version-check "$pkg" \
      || die "pip could not install $pkg (needs network access to PyPI)"
  fi
done
torch_dir="$(.venv/bin/python -c 'import importlib.util as u; print(u.find_spec("torch").submodule_search_locations[0])')"
[ -f "$torch_dir/lib/libtorch_cpu.so" ] || die "no libtorch in $torch_dir/lib; remove .venv and re-run"
if [ "$(readlink .venv/libtorch 2>/dev/null)" != "$torch_dir" ]; then
  ln -sfn "$torch_dir" .venv/libtorch
fi

# The researchers' example models (examples/*.py) as TorchScript, as a researcher exports them.
for example in examples/*.py; do
  module="${example%.py}.pt"
  if [ ! -f "$module" ] || [ "$example" -nt "$module" ]; then
    say "exporting $example to TorchScript"
    .venv/bin/python "$example" "$module" >/dev/null 2>&1 \
      || die "$example could not export its model with the .venv torch"
  fi
done

flavour=cpu
[ -f "$torch_dir/lib/libtorch_cuda.so" ] && flavour="cuda-capable"
say "ready: $(cargo --version), torch $TORCH_VERSION ($flavour) at .venv/libtorch"
