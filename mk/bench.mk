# Benchmarks (issues 2 and 13): fan-out, sweep, backup, fleet backup, history at scale and memory;
# JSON under build/bench/. BENCH_MEMORY_MINUTES: minutes of load for the memory benchmark (issue 13
# asks for 30), e.g. `make bench BENCH_MEMORY_MINUTES=3` for a quick look.
APT_PACKAGES += redis-server postgresql nmap openssh-client
BENCH_MEMORY_MINUTES ?= 30

.PHONY: bench
bench: deps venv ## run the fan-out, sweep, backup, fleet-backup, history and memory benchmarks; one table, JSON in build/bench/
	$(VBIN)/python bench/run_all.py --out $(BUILD)/bench --memory-minutes $(BENCH_MEMORY_MINUTES)
