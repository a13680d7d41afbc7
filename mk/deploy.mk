# The appliance: wheelhouse, `make lab`, reference unit files, deployment scenarios.
# Included by the root Makefile; see docs/deploy.md.
MOLECULE_SCENARIOS += default cluster backup-restore upgrade ha
# Headless Chromium on the controller: molecule/default loads Flower's Broker page in it
# (molecule/shared/tasks/flower-broker-page.yml).
APT_PACKAGES += chromium
TEST_TARGETS += check-lock check-rendered check-bad-input

# The wheelhouse is built from a netjobs source tree (this one; the upgrade scenario builds an
# older commit's) and the lock: exact versions and sha256 of every dependency wheel for the hosts'
# interpreters (requirements.lock, written on purpose by `make lock`, checked by `make check-lock`).
WHEELHOUSE_SRC ?= .
WHEELHOUSE ?= $(BUILD)/wheelhouse
WHEELHOUSE_TAR ?= $(BUILD)/wheelhouse.tar
LOCK := requirements.lock
# A source tree with its own lock is built from that lock.
WHEELHOUSE_LOCK ?= $(if $(wildcard $(WHEELHOUSE_SRC)/$(LOCK)),$(WHEELHOUSE_SRC)/$(LOCK),$(LOCK))
WHEEL_LOCK := $(VBIN)/python tools/deploy/wheel_lock.py
# Fixed timestamps make a rebuild of unchanged code byte-identical, so hosts see no change.
WHEEL_EPOCH := 315532800
# Dependencies that the hosts' interpreter needs but the controller's resolves away through
# environment markers: redis needs async-timeout below Python 3.11.3, and Debian 12 has 3.11.2.
WHEELHOUSE_EXTRA := 'async-timeout>=4.0.3'
APP_SOURCES := $(WHEELHOUSE_SRC)/pyproject.toml $(shell find $(WHEELHOUSE_SRC)/app/netjobs -type f -not -name '*.pyc' -not -path '*/__pycache__/*' 2>/dev/null)
HOSTS ?= 1
ANSIBLE_ENV := ANSIBLE_CONFIG=$(CURDIR)/ansible.cfg PATH="$(CURDIR)/$(VBIN):$$PATH"

.PHONY: wheelhouse lock check-lock lab lab-destroy render-units check-rendered check-bad-input

# netjobs (built from WHEELHOUSE_SRC) and the locked wheels of every dependency for each Python the
# lock targets, requirements.txt (the lock plus netjobs' own hash: hosts install it with
# pip --no-index --require-hashes) and wheelhouse.json (the manifest: which Pythons it serves), in
# one tar that the netjobs_app role unpacks on the hosts. No resolution happens here: a rebuild
# gives the same bytes.
$(WHEELHOUSE_TAR): $(APP_SOURCES) $(WHEELHOUSE_LOCK) tools/deploy/wheel_lock.py $(VBIN)/.installed
	rm -rf $(WHEELHOUSE) $(WHEELHOUSE_SRC)/$(BUILD)/lib $(WHEELHOUSE_SRC)/$(BUILD)/bdist.*
	mkdir -p $(WHEELHOUSE)
	cd $(WHEELHOUSE_SRC) && SOURCE_DATE_EPOCH=$(WHEEL_EPOCH) $(CURDIR)/$(VBIN)/pip wheel --quiet --disable-pip-version-check \
	  --no-deps --wheel-dir $(abspath $(WHEELHOUSE)) .
	$(WHEEL_LOCK) download --lock $(WHEELHOUSE_LOCK) --dest $(WHEELHOUSE)
	cp $(WHEELHOUSE_LOCK) $(WHEELHOUSE)/requirements.lock
	{ cat $(WHEELHOUSE_LOCK); cd $(WHEELHOUSE) && for w in netjobs-*.whl; do \
	  echo "$$w" | sed -E 's/^netjobs-([^-]+)-.*/netjobs==\1 \\/'; echo "    --hash=sha256:$$(sha256sum "$$w" | cut -d' ' -f1)"; done; } \
	  > $(WHEELHOUSE)/requirements.txt
	$(WHEEL_LOCK) manifest --lock $(WHEELHOUSE_LOCK) --wheelhouse $(WHEELHOUSE) --out $(WHEELHOUSE)/wheelhouse.json
	tar --sort=name --mtime=@$(WHEEL_EPOCH) --owner=0 --group=0 --numeric-owner -C $(WHEELHOUSE) -cf $@.tmp .
	mv $@.tmp $@
	@echo "wheelhouse: $$(ls $(WHEELHOUSE)/*.whl | wc -l) wheels for python $$(sed -n 's/^# targets: python \(.*\);.*/\1/p' $(WHEELHOUSE_LOCK)) in $@, sha256 $$(sha256sum $@ | cut -c1-12)"
wheelhouse: $(WHEELHOUSE_TAR) ## build build/wheelhouse.tar (netjobs + the locked dependencies) for the hosts

lock: venv ## re-resolve pyproject's dependencies for the hosts' Pythons into requirements.lock (on purpose)
	$(WHEEL_LOCK) lock --pyproject pyproject.toml --lock $(LOCK) --extra $(WHEELHOUSE_EXTRA)

check-lock: venv ## fail when requirements.lock and pyproject's dependency ranges disagree (offline)
	$(WHEEL_LOCK) check --pyproject pyproject.toml --lock $(LOCK)
	$(VBIN)/pytest -q -p no:cacheprovider tools/deploy/tests

lab: deps venv wheelhouse lab-base ## boot lab host(s) (HOSTS=1 or 3) at 10.213.1.0/24, deploy netjobs, run a smoke job
	tools/deploy/lab-appliance $(HOSTS)

# molecule/default (systemd and supervisor hosts) installs the wheelhouse (molecule/upgrade builds its
# previous release's in its prepare step).
molecule: wheelhouse

# `make lab-down` (mk/lab.mk) also stops the `make lab` hosts through this prerequisite.
lab-down: lab-destroy
lab-destroy: ## stop the hosts of `make lab` and remove what the lab tool created for them
	$(LAB) down --name lab

render-units: venv ## render the reference systemd/ and supervisor/ directories from roles/netjobs_processes
	rm -rf systemd supervisor
	$(ANSIBLE_ENV) $(VBIN)/ansible-playbook -i localhost, tools/render-reference.yml -e reference_dir=$(CURDIR)

check-rendered: venv ## prove that systemd/ and supervisor/ equal a fresh rendering of the role
	rm -rf $(BUILD)/rendered && mkdir -p $(BUILD)/rendered
	$(ANSIBLE_ENV) $(VBIN)/ansible-playbook -i localhost, tools/render-reference.yml -e reference_dir=$(CURDIR)/$(BUILD)/rendered >/dev/null
	diff -ru systemd $(BUILD)/rendered/systemd
	diff -ru supervisor $(BUILD)/rendered/supervisor
	@echo "check-rendered: systemd/ and supervisor/ match the role's rendering"

# site.yml with bad inventories on three fresh lab hosts (10.213.24.0/24): each case must stop in
# the validation play with its message, 0 tasks changed on every host. The hosts go down on exit,
# whatever happened.
BADINPUT_LAB := badinput
BADINPUT_INVENTORY := $(BUILD)/badinput/hosts.yml
check-bad-input: deps venv wheelhouse lab-base ## run site.yml with bad inventories on 3 fresh lab hosts: each stops before any change
	@started=$$(date +%s); mkdir -p $(BUILD)/badinput; \
	trap '$(LAB) down --name $(BADINPUT_LAB)' EXIT; \
	$(LAB) down --name $(BADINPUT_LAB); \
	$(LAB) up --name $(BADINPUT_LAB) --hosts 3 --subnet 10.213.24.0/24 \
	  --host-names badinput-data,badinput-worker-1,badinput-worker-2 --inventory $(BADINPUT_INVENTORY); \
	$(ANSIBLE_ENV) $(VBIN)/ansible-playbook -i localhost, tools/deploy/check-bad-input.yml; \
	echo "check-bad-input: every case stopped in validation with 0 changed, $$(( $$(date +%s) - started )) s"
