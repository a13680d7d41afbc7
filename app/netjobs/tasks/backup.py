"""Tasks of the backup family (being written)."""
