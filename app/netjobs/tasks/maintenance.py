"""Tasks of the maintenance family (being written)."""
