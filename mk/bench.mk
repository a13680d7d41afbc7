# Benchmarks (issue 2): fan-out, sweep and backup; JSON under build/bench/.
APT_PACKAGES += redis-server postgresql nmap openssh-client

.PHONY: bench
bench: deps venv ## run the fan-out, sweep and backup benchmarks; one table, JSON in build/bench/
	$(VBIN)/python bench/run_all.py --out $(BUILD)/bench
