"""Celery tasks: thin wrappers over netjobs.services."""
