"""Batch inference: a registered model version scored over a pinned Delta table on Ray Data."""
