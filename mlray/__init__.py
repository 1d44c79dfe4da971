"""mlray: a tabular model from a Delta Lake table to a drift-watched service on Ray."""

__version__ = "0.1.0"
