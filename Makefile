# tsilo.so, a Rust drop-in for Kamailio's C tsilo module.
#   make deps      apt packages (kamailio, sipp, libclang) and the Kamailio headers
#   make           build build/tsilo.so (release)
#   make test      deps + build + unit and integration tests (what CI runs)
#   make test-debian13  make test and make test-deb in a Debian 13 root (debootstrap, cached in DEBIAN13_CACHE)
#   make demo      deps + build + Kamailio running examples/kamailio.cfg with this module
#   make bench     C tsilo.so vs ours, interleaved rounds -> bench/results.json + docs/performance.md tables
#   make soak      100k mixed calls, then 3000 relay collisions per variant, against ours (about 25 minutes)
#   make deb       build/kamailio-tsilo-rs_<version>_<arch>.deb: replaces Debian's C tsilo.so (dpkg-divert)
#   make test-deb  lintian, apt install, the example config loads ours, apt remove/purge: C module back
#   make install   copy tsilo.so to MODULES_DIR
#   make clean
# KAMAILIO=<version|tarball|URL> (e.g. make test KAMAILIO=6.1.4): build, test, bench or run the
#   demo against that upstream Kamailio, built from source once into UPSTREAM_CACHE
#   (kamailio-headers/upstream.sh), instead of the installed Debian package. Not for deb/test-deb.

MODULES_DIR ?= /usr/local/lib/kamailio/modules
CARGO ?= cargo
# bindgen's libclang and clang's builtin headers: LLVM 14 on Debian 12, 19 on Debian 13; on another
# release, the version libclang-dev depends on. `make LLVM_VERSION=N` overrides.
LLVM_VERSION := $(shell . /etc/os-release; case "$$VERSION_CODENAME" in (bookworm) echo 14;; (trixie) echo 19;; \
                  (*) apt-cache depends libclang-dev 2>/dev/null | sed -n 's/.*Depends: libclang-\([0-9]*\)-dev$$/\1/p' | head -1;; esac)
# Packages the build and the tests need.
APT_PACKAGES := kamailio kamailio-utils-modules kamailio-lua-modules sip-tester \
                libclang1-$(LLVM_VERSION) libclang-common-$(LLVM_VERSION)-dev \
                make gcc libc6-dev binutils python3 ca-certificates dpkg-dev
# The Debian 13 root of make test-debian13 (.ci/debian13.sh): made once here, reused by later runs;
# DEBIAN13_TEST: what runs inside it, in a fresh clone of HEAD.
DEBIAN13_CACHE ?= /var/cache/tsilo-rs/debian13
# DEBIAN13_CARRY: files of this machine copied into the root's /src/carry.
DEBIAN13_TEST ?= make test && make test-deb
DEBIAN13_CARRY ?=

# An upstream Kamailio instead of Debian's: its kamailio/kamcmd first on PATH, its configured tree
# for build.rs, its modules for the tests, and a target and build directory of its own.
ifneq ($(KAMAILIO),)
export KAMAILIO_CFG
UPSTREAM_PREFIX := $(shell KAMAILIO_CFG='$(KAMAILIO_CFG)' kamailio-headers/upstream.sh --prefix '$(KAMAILIO)')
ifeq ($(UPSTREAM_PREFIX),)
$(error KAMAILIO=$(KAMAILIO): no such upstream Kamailio (see kamailio-headers/upstream.sh))
endif
UPSTREAM_NAME := $(notdir $(UPSTREAM_PREFIX))
BUILD_DIR := build/$(UPSTREAM_NAME)
export PATH := $(UPSTREAM_PREFIX)/sbin:$(PATH)
export KAMAILIO_SRC := $(UPSTREAM_PREFIX)/src
export TSILO_KAMAILIO_MODULES := $(UPSTREAM_PREFIX)/lib64/kamailio/modules
export CARGO_TARGET_DIR := $(CURDIR)/target/$(UPSTREAM_NAME)
TARGET_DIR := $(CARGO_TARGET_DIR)
# Debian's kamailio packages are not needed (nor their source): the upstream build replaces them.
APT_PACKAGES := $(filter-out kamailio kamailio-%,$(APT_PACKAGES))
else
BUILD_DIR := build
TARGET_DIR := target
endif

.PHONY: all build deps headers test test-debian13 test-upstream debian-only deb test-deb demo bench soak install clean

all: build

build: $(BUILD_DIR)/tsilo.so

$(BUILD_DIR)/tsilo.so: $(shell find src c_shim -type f) build.rs Cargo.toml
	$(CARGO) build --release
	mkdir -p $(BUILD_DIR)
	cp $(TARGET_DIR)/release/libtsilo.so $(BUILD_DIR)/tsilo.so
	@echo "built: $(CURDIR)/$(BUILD_DIR)/tsilo.so"

# Installs only what is missing, so a second run is quick and needs no network.
deps:
	@[ -n "$(LLVM_VERSION)" ] || { echo "deps: cannot tell which libclang this release has (set LLVM_VERSION=N)"; exit 1; }
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing:" $$missing; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@command -v $(CARGO) >/dev/null || { echo "cargo not found: install a Rust toolchain (1.85+)"; exit 1; }
ifneq ($(KAMAILIO),)
	@kamailio-headers/upstream.sh '$(KAMAILIO)' >/dev/null
else
	@$(MAKE) --no-print-directory headers
endif

headers:
	@./kamailio-headers/fetch.sh >/dev/null

# Unit and integration tests, plus a short smoke of the benchmark and the soak (bench/tests).
# TEST_ARGS: more cargo test arguments (e.g. `--test collision`).
test: deps build
	TSILO_MODULE_DIR=$(CURDIR)/$(BUILD_DIR) $(CARGO) test --release --workspace $(TEST_ARGS)

# make test against each upstream Kamailio of UPSTREAM_VERSIONS, one after the other (CI's matrix).
UPSTREAM_VERSIONS ?= 5.8.8 6.0.7 6.1.4 master
test-upstream:
	@for v in $(UPSTREAM_VERSIONS); do \
		echo "==== make test KAMAILIO=$$v"; \
		$(MAKE) --no-print-directory test KAMAILIO=$$v || exit 1; \
	done

# make test again inside a Debian 13 root (kamailio 6.0, Debian's Rust 1.85), on the committed HEAD.
test-debian13:
	DEBIAN13_CARRY='$(DEBIAN13_CARRY)' .ci/debian13.sh $(DEBIAN13_CACHE) '$(DEBIAN13_TEST)'

# The Debian package (packaging/): built for the kamailio package installed here.
# The package depends on Debian's exact kamailio package: no upstream builds.
debian-only:
	@[ -z "$(KAMAILIO)" ] || { echo "make deb/test-deb are Debian-only (the package depends on Debian's kamailio package): unset KAMAILIO"; exit 1; }

deb: debian-only deps build
	@packaging/build-deb.sh

# Installs and removes the package on this machine (root; leaves it as it was). FOREIGN_DEB=file:
# also checks that apt refuses a package built for another kamailio version.
test-deb: debian-only deps build
	packaging/test-deb.sh

# Tables into docs/performance.md, between its markers. With KAMAILIO=..., against that build's C
# module, into the report's table for it.
bench: deps build
	TSILO_MODULE_DIR=$(CURDIR)/$(BUILD_DIR) $(CARGO) run --release -p tsilo-bench -- bench \
		--out $(CURDIR)/bench/results$(if $(KAMAILIO),-$(UPSTREAM_NAME)).json --report $(CURDIR)/docs/performance.md \
		$(if $(KAMAILIO),--section $(UPSTREAM_NAME))

# Collisions per variant of tests/collision.rs in the soak (CI runs 150).
SOAK_COLLISIONS ?= 3000

soak: deps build
	TSILO_MODULE_DIR=$(CURDIR)/$(BUILD_DIR) $(CARGO) run --release -p tsilo-bench -- soak
	TSILO_MODULE_DIR=$(CURDIR)/$(BUILD_DIR) TSILO_COLLISIONS=$(SOAK_COLLISIONS) $(CARGO) test --release --test collision -- --nocapture

demo: deps build
	TSILO_MODULE_DIR=$(CURDIR)/$(BUILD_DIR) python3 examples/demo.py

install: build
	install -d $(DESTDIR)$(MODULES_DIR)
	install -m 0644 $(BUILD_DIR)/tsilo.so $(DESTDIR)$(MODULES_DIR)/tsilo.so
	@echo "installed $(DESTDIR)$(MODULES_DIR)/tsilo.so"
	@echo "load it with:  loadmodule \"$(MODULES_DIR)/tsilo.so\""

clean:
	$(CARGO) clean
	rm -rf build
