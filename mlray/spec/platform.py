"""`platform`: where things run and where state lives."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field

from mlray.spec.base import Section
from mlray.spec.secrets import resolve


class PlatformSpec(Section):
    """Where things run and where state lives; a URI switches to the real service."""

    ray_address: str | None = Field(None, description="None: embedded local Ray; 'auto' or ray://host:10001")
    num_cpus: float | None = Field(None, gt=0, description="logical CPUs of the embedded Ray (default: the machine's)")
    state_dir: str = Field(".mlray", description="local state folder, relative to the spec file (MLRAY_HOME overrides)")
    lake_root: str | None = Field(None, description="Delta tables root; default <state_dir>/lake; s3:// or gs:// allowed")
    storage_options: dict[str, str] = Field(default_factory=dict, description="passed to deltalake for object stores; "
                                            "a value may name environment variables as ${NAME}, read where it is used")
    mlflow_tracking_uri: str | None = Field(None, description="default: a SQLite store under <state_dir>/mlflow; "
                                                             "a password in it may be ${NAME}")
    storage_path: str | None = Field(None, description="where Ray Train and Tune keep checkpoints, so a resumed run on "
                                                       "any node finds them; default <lake_root>/_checkpoints")

    @property
    def lake_uri(self) -> str:
        return self.lake_root or str(Path(self.state_dir) / "lake")

    @property
    def checkpoints_uri(self) -> str:
        return self.storage_path or f"{self.lake_uri.rstrip('/')}/_checkpoints"

    @property
    def tracking_uri(self) -> str:
        """The tracking URI with its `${NAME}` references read from this process's environment."""
        uri = resolve(self.mlflow_tracking_uri, "platform.mlflow_tracking_uri")
        return uri or f"sqlite:///{Path(self.state_dir) / 'mlflow' / 'mlflow.db'}"

    @property
    def credentials(self) -> dict[str, str]:
        """`storage_options` with their `${NAME}` references read from this process's environment."""
        return {k: resolve(v, f"platform.storage_options.{k}") for k, v in self.storage_options.items()}

    @property
    def reports_dir(self) -> Path:
        return Path(self.state_dir) / "reports"

    def resolved(self, base_dir: Path) -> "PlatformSpec":
        """Relative local paths become absolute, anchored at the spec's folder."""
        home = os.environ.get("MLRAY_HOME")
        state = Path(home) if home else Path(self.state_dir)
        if not state.is_absolute():
            state = base_dir / state
        lake, storage = (p if not p or "://" in p or Path(p).is_absolute() else str((base_dir / p).resolve())
                         for p in (self.lake_root, self.storage_path))
        return self.model_copy(update={"state_dir": str(state.resolve()), "lake_root": lake, "storage_path": storage})
