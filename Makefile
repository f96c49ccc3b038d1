# The two commands of the README's quick start:
#   make demo   set up (idempotent), build, and run `fedchain demo`
#   make test   set up (idempotent), then run every check CI runs
# .ci/run calls `make test`, so CI and a newcomer run exactly the same thing.

CARGO ?= cargo

.PHONY: setup build demo test lint check-deps fuzz clean

setup:
	@scripts/setup.sh

build: setup
	$(CARGO) build --release --locked -p fedchain-cli -p fedchain-server

demo: build
	./target/release/fedchain demo

test: setup lint check-deps
	$(CARGO) test --workspace --locked --exclude fedchain-coordinator --exclude fedchain-fuzzing
	@# The coordinator's and the fuzz targets' tests build on their own: in a workspace build, cargo
	@# unifies features and would compile fedchain-models with libtorch for them too (and their test
	@# binaries have no rpath to it). Built without the rest, they link no libtorch, and their tests
	@# passing is the proof that they never need it.
	$(CARGO) test --locked -p fedchain-coordinator -p fedchain-fuzzing
	@# Last: coverage-guided fuzzing of every decoder of untrusted bytes, 20 s per target.
	@scripts/fuzz.sh

lint: setup
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --no-deps --locked --quiet

# cargo fuzz on every decoder of untrusted bytes (fuzz/, targets in fuzzing/). FUZZ_SECONDS per target
# (default 20); `scripts/fuzz.sh TARGET` runs one.
fuzz: setup
	@scripts/fuzz.sh

# Architecture invariants that the compiler does not check (see ARCHITECTURE.md).
check-deps: setup
	@scripts/check-deps.sh

clean:
	$(CARGO) clean
