# The one command that runs every test: `make test`.
# - host tier: cargo test for the whole workspace (pure core over the fake backend, sys-layer
#   golden tests, runner unit tests; the real-kernel tests show as "ignored" here), then 10 s
#   of each cargo fuzz target;
# - VM tier: builds and caches the two test kernels, boots them under QEMU TCG and runs the
#   kernel-backend tests and every legacy client in every mode, then compares with type1;
#   the CUSE daemon (protocol, SIGTERM/kill -9, the nodes without and with the preload); the
#   Debian package built, installed on the host tree and used in the guest; lock
#   isolation (a 1 GiB map in one container holds up no other container's calls, 2 vCPUs); then
#   the kernel's VFIO selftests, QEMU 7.2/10.0, DPDK and a rust-vmm client (vfio-ioctls,
#   dynamic and static) on type1 and through the shim; then the
#   no-IOMMU tier (a machine without an IOMMU: the no-IOMMU clients, the explorer's no-IOMMU
#   subset and DPDK in --iova-mode=pa, legacy no-IOMMU against the shim).
# Both install what they need (Debian packages, virtme-ng) by themselves.

.PHONY: test host-test vm-test bench demo explore install deb

PREFIX ?= /usr/local

test: host-test vm-test

host-test:
	bash compat-tests/scripts/host-deps.sh
	@# Lints and format check when the toolchain has clippy and rustfmt (the machine image does;
	@# neither can be fetched here).
	if cargo clippy --version >/dev/null 2>&1; then cargo clippy --workspace --all-targets -- -D warnings; \
	else echo "host-test: cargo clippy not installed: lint step not run"; fi
	if cargo fmt --version >/dev/null 2>&1; then cargo fmt --all --check; \
	else echo "host-test: rustfmt not installed: format check not run"; fi
	cargo test --workspace
	@# A short pass of every fuzz target from its seeds (fuzz/run.sh; the long runs are in
	@# docs/testing.md).
	SECONDS_PER_TARGET=10 bash fuzz/run.sh

# The VM tiers in two lanes that share the machine's cores (compat-tests/scripts/vm-test.sh):
# vm-tier.sh, lock-isolation.sh and programs-tier.sh in one; the daemon's three VM tests
# (cuse/tests/vm), the package (packaging/test-package.sh) and noiommu-tier.sh in the other.
vm-test:
	bash compat-tests/scripts/vm-test.sh

# The sequence explorer alone at any volume, judged against type1 (compat-tests/scripts/explore.sh):
# make explore SEQS=100000 SEED=3 [FIRST=0] [COLUMNS="cdev-only/shim"]
explore:
	bash compat-tests/scripts/explore.sh

# The main job: unmodified QEMU 7.2 and 10.0 assigning a device through the shim on a kernel
# without the legacy container or groups, with the L2 DMA verified.
demo:
	bash compat-tests/scripts/demo.sh

bench:
	cargo bench -p vfio-shim --bench translator
	bash compat-tests/scripts/bench.sh

# Installs the command, the preload, the daemon, its unit, udev and tmpfiles rules, man pages
# and completions under $(DESTDIR)$(PREFIX) (packaging/install.sh).
install:
	bash packaging/install.sh "$(DESTDIR)" "$(PREFIX)"

# The Debian package, in target/debian (packaging/build-deb.sh).
deb:
	bash packaging/build-deb.sh
