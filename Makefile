# tsilo.so, a Rust drop-in for Kamailio's C tsilo module.
#   make deps      apt packages (kamailio, sipp, libclang) and the Kamailio headers
#   make           build build/tsilo.so (release)
#   make test      deps + build + unit and integration tests (what CI runs)
#   make demo      deps + build + Kamailio running examples/kamailio.cfg with this module
#   make bench     C tsilo.so vs ours, interleaved rounds -> bench/results.json + README table
#   make soak      100k mixed calls, then 3000 relay collisions per variant, against ours (about 25 minutes)
#   make install   copy tsilo.so to MODULES_DIR
#   make clean

MODULES_DIR ?= /usr/local/lib/kamailio/modules
CARGO ?= cargo
# Packages the build and the tests need (Debian bookworm names).
APT_PACKAGES := kamailio kamailio-utils-modules kamailio-lua-modules sip-tester libclang1-14 libclang-common-14-dev \
                make gcc libc6-dev binutils python3 ca-certificates

.PHONY: all build deps headers test demo bench soak install clean

all: build

build: build/tsilo.so

build/tsilo.so: $(shell find src c_shim -type f) build.rs Cargo.toml
	$(CARGO) build --release
	mkdir -p build
	cp target/release/libtsilo.so build/tsilo.so
	@echo "built: $(CURDIR)/build/tsilo.so"

# Installs only what is missing, so a second run is quick and needs no network.
deps:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing:" $$missing; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@command -v $(CARGO) >/dev/null || { echo "cargo not found: install a Rust toolchain (1.85+)"; exit 1; }
	@$(MAKE) --no-print-directory headers

headers:
	@./kamailio-headers/fetch.sh >/dev/null

# Unit and integration tests, plus a short smoke of the benchmark and the soak (bench/tests).
test: deps build
	TSILO_MODULE_DIR=$(CURDIR)/build $(CARGO) test --release --workspace

bench: deps build
	TSILO_MODULE_DIR=$(CURDIR)/build $(CARGO) run --release -p tsilo-bench -- bench \
		--out $(CURDIR)/bench/results.json --readme $(CURDIR)/README.md

# Collisions per variant of tests/collision.rs in the soak (CI runs 150).
SOAK_COLLISIONS ?= 3000

soak: deps build
	TSILO_MODULE_DIR=$(CURDIR)/build $(CARGO) run --release -p tsilo-bench -- soak
	TSILO_MODULE_DIR=$(CURDIR)/build TSILO_COLLISIONS=$(SOAK_COLLISIONS) $(CARGO) test --release --test collision -- --nocapture

demo: deps build
	python3 examples/demo.py

install: build
	install -d $(DESTDIR)$(MODULES_DIR)
	install -m 0644 build/tsilo.so $(DESTDIR)$(MODULES_DIR)/tsilo.so
	@echo "installed $(DESTDIR)$(MODULES_DIR)/tsilo.so"
	@echo "load it with:  loadmodule \"$(MODULES_DIR)/tsilo.so\""

clean:
	$(CARGO) clean
	rm -rf build
