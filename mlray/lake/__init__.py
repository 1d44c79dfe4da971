"""Delta Lake tables, exactly-once ingestion with quarantine, validation, and the synthetic source."""

from mlray.lake.tables import AppendResult, Lake, TableInfo

__all__ = ["AppendResult", "Lake", "TableInfo"]
