"""Tasks of the compliance family (being written)."""
