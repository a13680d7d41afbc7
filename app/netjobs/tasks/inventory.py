"""Tasks of the inventory family (being written)."""
