# Ordo's two commands: `make run` (the server on ./data) and `make test`.
# Everything builds with the one `release` profile, so RocksDB's C++ is compiled once.

SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)
CARGO ?= cargo

.PHONY: deps run test lint bench fmt

# RocksDB's Rust bindings need libclang (bindgen) and a C++ compiler.
deps:
	@if ! command -v clang >/dev/null 2>&1 || ! ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1; then \
		echo "installing libclang-dev and clang (needed to build RocksDB's bindings)"; \
		$(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q libclang-dev clang g++; \
	fi

# The HTTP server on 127.0.0.1:8080 with RocksDB in ./data (see README for flags).
run: deps
	$(CARGO) run --release --bin ordo -- serve --data-dir ./data

test: deps
	$(CARGO) test --release --workspace

lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

bench: deps
	$(CARGO) bench --bench journal
