"""One router per resource, each mounted under /api/v1 by netjobs.api.app."""
