"""Tasks of the network family (being written)."""
