"""PostgreSQL access: models, per-process engines, migrations."""
