# The Python application: tests, benchmarks, local demo.
APT_PACKAGES += redis-server postgresql postgresql-client openssh-client openssl nmap fping iputils-ping
TEST_TARGETS := test-app $(TEST_TARGETS)

.PHONY: test-app
# Two pytest workers (each with its own servers): the tests mostly wait on processes they start.
# The HTTP API's tests run in their own pytest processes: after them, a child forked by the test
# process hung in libpq's connect (test_backup's concurrent archivers) and the session worker's
# inspect replies went stale (test_health). The API never forks, so this is kept apart, not solved.
API_TESTS := $(wildcard app/tests/test_api*.py)
test-app: deps venv ## app tests against throwaway Redis, PostgreSQL, Celery workers and SSH simulators
	$(VBIN)/pytest -q -n 2 $(addprefix --ignore=,$(API_TESTS))
	$(VBIN)/pytest -q -n 2 $(API_TESTS)

.PHONY: demo
demo: deps venv ## run the platform locally (throwaway Redis/PostgreSQL, workers, beat, Flower) with a sweep and a backup; KEEP=1 stays up
	$(VBIN)/python tools/demo.py $(if $(KEEP),--keep)
