# Lab hosts (systemd-nspawn), lint and Molecule. Included by the root Makefile.
APT_PACKAGES += systemd-container mmdebstrap iptables iproute2 openssh-client util-linux ca-certificates
MOLECULE_SCENARIOS += redis postgresql
TEST_TARGETS += lint molecule

LAB := tools/lab/lab
N ?= 3
LAB_UP_NAME := manual
LAB_UP_SUBNET := 10.213.2.0/24
LAB_UP_INVENTORY := inventories/lab/hosts-manual.yml
# Shared Molecule settings (driver, create/destroy, ANSIBLE_CONFIG) live in one base config.
MOLECULE := PATH="$(CURDIR)/$(VBIN):$$PATH" $(VBIN)/molecule --base-config molecule/shared/base.yml
LINT_PATHS := $(wildcard roles playbooks molecule inventories)

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

molecule: deps venv lab-base ## molecule test for every scenario in MOLECULE_SCENARIOS, with durations
	@for scenario in $(MOLECULE_SCENARIOS); do \
	  started=$$(date +%s); \
	  echo "=== molecule test -s $$scenario"; \
	  if ! $(MOLECULE) test -s $$scenario 2>&1 | tee $(BUILD)/molecule-$$scenario.log; then \
	    echo "=== molecule $$scenario FAILED after $$(( $$(date +%s) - started )) s; its failed tasks:"; \
	    sed 's/\x1b\[[0-9;]*m//g' $(BUILD)/molecule-$$scenario.log | grep -E -A12 '\[ERROR\]|fatal: ' | tail -n 150; \
	    exit 1; \
	  fi; \
	  echo "=== molecule $$scenario passed in $$(( $$(date +%s) - started )) s" | tee -a $(BUILD)/molecule-durations.log; \
	done
