"""Plain-Python job logic, callable and testable without Celery."""
