# The appliance: wheelhouse, `make lab`, reference unit files, deployment scenarios.
# Included by the root Makefile; see docs/deploy.md.
MOLECULE_SCENARIOS += default supervisor cluster
TEST_TARGETS += check-rendered check-bad-input

WHEELHOUSE := $(BUILD)/wheelhouse
WHEELHOUSE_TAR := $(BUILD)/wheelhouse.tar
# Fixed timestamps make a rebuild of unchanged code byte-identical, so hosts see no change.
WHEEL_EPOCH := 315532800
# Dependencies that the hosts' interpreter needs but the controller's resolves away through
# environment markers: redis needs async-timeout below Python 3.11.3, and Debian 12 has 3.11.2.
WHEELHOUSE_EXTRA := 'async-timeout>=4.0.3'
APP_SOURCES := pyproject.toml $(shell find app/netjobs -type f -not -name '*.pyc' -not -path '*/__pycache__/*' 2>/dev/null)
HOSTS ?= 1
ANSIBLE_ENV := ANSIBLE_CONFIG=$(CURDIR)/ansible.cfg PATH="$(CURDIR)/$(VBIN):$$PATH"

.PHONY: wheelhouse lab lab-destroy render-units check-rendered check-bad-input

# netjobs and every dependency as wheels, plus requirements.txt pinning them, in one tar that the
# netjobs_app role unpacks on the hosts (they install with pip --no-index: no internet needed).
$(WHEELHOUSE_TAR): $(APP_SOURCES) $(VBIN)/.installed
	rm -rf $(WHEELHOUSE) $(BUILD)/lib $(BUILD)/bdist.*
	mkdir -p $(WHEELHOUSE)
	SOURCE_DATE_EPOCH=$(WHEEL_EPOCH) $(VBIN)/pip wheel --quiet --disable-pip-version-check --wheel-dir $(WHEELHOUSE) . $(WHEELHOUSE_EXTRA)
	cd $(WHEELHOUSE) && ls *.whl | sed -E 's/^([^-]+)-([^-]+)-.*/\1==\2/' | sort > requirements.txt
	tar --sort=name --mtime=@$(WHEEL_EPOCH) --owner=0 --group=0 --numeric-owner -C $(WHEELHOUSE) -cf $@.tmp .
	mv $@.tmp $@
	@echo "wheelhouse: $$(ls $(WHEELHOUSE)/*.whl | wc -l) wheels in $@"
wheelhouse: $(WHEELHOUSE_TAR) ## build build/wheelhouse.tar (netjobs + dependencies) for the hosts

lab: deps venv wheelhouse lab-base ## boot lab host(s) (HOSTS=1 or 3) at 10.213.1.0/24, deploy netjobs, run a smoke job
	tools/deploy/lab-appliance $(HOSTS)

# molecule/default and molecule/supervisor install the wheelhouse.
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

check-bad-input: venv ## show that bad role variables stop the play before any change
	$(ANSIBLE_ENV) $(VBIN)/ansible-playbook -i localhost, --check tools/deploy/check-bad-input.yml
