# The Python application: tests, benchmarks, local demo.
APT_PACKAGES += redis-server postgresql postgresql-client openssh-client openssl nmap fping iputils-ping
# Headless, for the offline docs pages' test (app/tests/test_api_docs_browser.py).
APT_PACKAGES += chromium
TEST_TARGETS := test-app $(TEST_TARGETS)

.PHONY: test-app
# Four pytest workers (each with its own servers): the tests mostly wait on processes they start,
# so four fill 2 cores (3.5 min against 5.5 with two; measured with vmstat: 30% idle left).
test-app: deps venv ## app tests against throwaway Redis, PostgreSQL, Celery workers and SSH simulators
	$(VBIN)/pytest -q -n 4

.PHONY: demo
demo: deps venv ## run the platform locally (throwaway Redis/PostgreSQL, workers, beat, Flower) with a sweep and a backup; KEEP=1 stays up
	$(VBIN)/python tools/demo.py $(if $(KEEP),--keep)
