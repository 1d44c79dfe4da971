"""The monitor's checkpoint: one `MonitorCheckpoint` document under the lake root (`monitor_state`), committed with a
compare-and-swap, so two monitors never both advance it and a restarted one resumes where the last one stopped."""

from __future__ import annotations

from mlray.control.ports import StateStore
from mlray.control.state import MonitorCheckpoint, read_document

STATE_TABLE = "monitor_state"
ACTOR = "monitor"


def read_checkpoint(revision: int, document: dict | None, table: str = STATE_TABLE) -> MonitorCheckpoint | None:
    """The checkpoint of a table's document (None: none written yet); one written by a newer mlray is refused in one
    line."""
    return None if document is None else read_document(MonitorCheckpoint, table, revision, document)


class CheckpointStore:
    """Reads the checkpoint and commits it on top of the revision it was read at (`StateConflict` otherwise)."""

    def __init__(self, store: StateStore, table: str = STATE_TABLE):
        self.store, self.table, self.revision = store, table, 0

    def read(self) -> MonitorCheckpoint | None:
        self.revision, document = self.store.read()
        return read_checkpoint(self.revision, document, self.table)

    def write(self, checkpoint: MonitorCheckpoint) -> None:
        self.revision = self.store.write(checkpoint.document(), self.revision, writer=ACTOR)
