# netjobs: top-level entry points. Each concern keeps its targets in mk/*.mk;
# fragments append to APT_PACKAGES, TEST_TARGETS and MOLECULE_SCENARIOS.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
VBIN := $(VENV)/bin
BUILD := build
STAMPS := $(BUILD)/stamps

APT_PACKAGES := git python3-venv
TEST_TARGETS :=
MOLECULE_SCENARIOS :=

include $(sort $(wildcard mk/*.mk))

.PHONY: help deps venv test
help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | sort | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

# apt packages every target may need; re-run only when the list changes.
$(STAMPS)/apt-$(shell echo '$(sort $(APT_PACKAGES))' | md5sum | cut -c1-12):
	@mkdir -p $(STAMPS)
	@if ! dpkg-query -W -f='$${Status}\n' $(sort $(APT_PACKAGES)) 2>/dev/null | grep -qv '^install ok installed$$' \
	    && [ "$$(dpkg-query -W -f='$${Status}\n' $(sort $(APT_PACKAGES)) 2>/dev/null | wc -l)" -eq "$(words $(sort $(APT_PACKAGES)))" ]; then \
	  echo "apt packages already present"; \
	else \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(sort $(APT_PACKAGES)); \
	fi
	@touch $@
deps: $(STAMPS)/apt-$(shell echo '$(sort $(APT_PACKAGES))' | md5sum | cut -c1-12) ## install the Debian packages the targets need

# The packages the hosts get come at the versions requirements.lock pins, so that the tests run
# against what ships (app/tests/test_upstream_overrides.py checks the pinned internals).
$(VBIN)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(VBIN)/pip install -q -U pip wheel
	@mkdir -p $(BUILD)
	sed -n 's/^\([A-Za-z0-9_.-]*==[^ ]*\).*/\1/p' requirements.lock > $(BUILD)/constraints.txt
	$(VBIN)/pip install -q -c $(BUILD)/constraints.txt -e '.[test,deploy]'
	@touch $@
venv: $(VBIN)/.installed ## create the development virtualenv (.venv)

# CI's 2 cores are the limit: what waits on the network or on lab hosts runs side by side with
# what computes. The venv and wheelhouse (pip) build while the lab bases are debootstrapped; the
# app tests run alone (four pytest workers fill both cores); the other checks run two at a time;
# then the Molecule scenarios (tools/molecule-run, MOLECULE_JOBS at a time).
TEST_SIDE_BY_SIDE = $(filter-out test-app molecule,$(TEST_TARGETS))
test: deps ## lint, app tests and every Molecule scenario (what CI runs)
	$(MAKE) --no-print-directory --output-sync=target -j2 wheelhouse lab-base
	$(MAKE) --no-print-directory $(filter test-app,$(TEST_TARGETS))
	$(MAKE) --no-print-directory --output-sync=target -j2 $(TEST_SIDE_BY_SIDE)
	$(MAKE) --no-print-directory $(filter molecule,$(TEST_TARGETS))
	@echo "make test: all of $(TEST_TARGETS) passed"
