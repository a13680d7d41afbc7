# The Python application: tests, benchmarks, local demo.
APT_PACKAGES += redis-server postgresql postgresql-client openssh-client nmap fping iputils-ping
TEST_TARGETS := test-app $(TEST_TARGETS)

.PHONY: test-app
test-app: deps venv ## app tests against throwaway Redis, PostgreSQL, Celery workers and SSH simulators
	$(VBIN)/pytest -q
