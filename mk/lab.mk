# Lab hosts (systemd-nspawn), lint and Molecule. Included by the root Makefile.
APT_PACKAGES += systemd-container mmdebstrap iptables iproute2 openssh-client util-linux ca-certificates
MOLECULE_SCENARIOS += redis postgresql
TEST_TARGETS += lint molecule

LAB := tools/lab/lab
N ?= 3
LAB_UP_NAME := manual
LAB_UP_SUBNET := 10.213.2.0/24
LAB_UP_INVENTORY := inventories/lab/hosts-manual.yml
# Shared Molecule settings (driver, create/destroy, ANSIBLE_CONFIG) live in one base config,
# which tools/molecule-run passes.
LINT_PATHS := $(wildcard roles playbooks molecule inventories)
# Scenarios run side by side (each has its own hosts and address block), MOLECULE_JOBS at a time:
# most of their time is spent waiting (converges over SSH, warm stops, the drills' bounds), and the
# drills assert bounds with margins that hold under the load of two other scenarios. The longest
# start first so that the short ones fill the slots at the end (clean clone at 6011980: cluster
# 1276 s, default 1176, upgrade 895, ha 875, backup-restore 759, redis 450, postgresql 294; default
# started fifth then and ran alone for the last 13 minutes).
MOLECULE_JOBS ?= 3
MOLECULE_FIRST := cluster default ha upgrade backup-restore

.PHONY: lab-base lab-up lab-down lint molecule
lab-base: deps ## build (or reuse) the cached base rootfs of the lab hosts, Debian 12 and 13
	$(LAB) base --release bookworm
	$(LAB) base --release trixie

lab-up: deps ## boot N plain lab hosts (N=3) and write inventories/lab/hosts-manual.yml
	$(LAB) up --name $(LAB_UP_NAME) --hosts $(N) --subnet $(LAB_UP_SUBNET) --inventory $(LAB_UP_INVENTORY)

lab-down: ## stop the hosts of lab-up
	$(LAB) down --name $(LAB_UP_NAME)

lint: venv ## yamllint and ansible-lint (production profile) on roles, playbooks and molecule
	$(VBIN)/yamllint --strict $(LINT_PATHS) .yamllint .ansible-lint
	PATH="$(CURDIR)/$(VBIN):$$PATH" $(VBIN)/ansible-lint $(LINT_PATHS)

molecule: deps venv lab-base ## molecule test for every scenario in MOLECULE_SCENARIOS, MOLECULE_JOBS at a time, with durations
	tools/molecule-run $(MOLECULE_JOBS) $(foreach s,$(MOLECULE_FIRST),$(filter $(s),$(MOLECULE_SCENARIOS))) \
	    $(filter-out $(MOLECULE_FIRST),$(MOLECULE_SCENARIOS))
