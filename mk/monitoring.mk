# Monitoring: the Prometheus alert rules in monitoring/prometheus and their unit tests.
# promtool comes from Debian's prometheus package (its service is not needed for this).
APT_PACKAGES += prometheus
TEST_TARGETS += check-monitoring

PROMTOOL ?= promtool
MONITORING_RULES := $(wildcard monitoring/prometheus/*.rules.yml)
MONITORING_TESTS := $(wildcard monitoring/prometheus/tests/*.test.yml)

.PHONY: check-monitoring
check-monitoring: deps ## promtool check and unit-test the alert rules (monitoring/prometheus)
	$(PROMTOOL) check rules $(MONITORING_RULES)
	$(PROMTOOL) test rules $(MONITORING_TESTS)
