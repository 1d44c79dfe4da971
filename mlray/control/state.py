"""The loops' typed state, each piece defined once: the statuses of a rollout and of an incident, the aliases, the
control plane's serving document and the monitor's checkpoint. Statuses are `StrEnum`s: a member equals, hashes and
serialises as its string, so the state tables keep the documents they always held."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_serializer

from mlray.control.clock import utc_now
from mlray.errors import UserError


class RolloutStatus(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"
    STOPPED = "stopped"  # by a change made by hand


ROLLOUT_ACTIVE = frozenset({RolloutStatus.RUNNING, RolloutStatus.PAUSED})
ROLLOUT_ENDED = frozenset(RolloutStatus) - ROLLOUT_ACTIVE


class IncidentStatus(StrEnum):
    OPEN = "open"
    AWAITING_APPROVAL = "awaiting_approval"
    APPROVED = "approved"
    SUBMITTED = "submitted"  # its retraining job
    RUNNING = "running"
    RETRAINED = "retrained"  # a challenger registered; its rollout runs and records the outcome when it ends
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"
    STOPPED = "stopped"
    REJECTED = "rejected"  # by the gate
    FAILED = "failed"
    # no longer written: the retraining job used to stop following a rollout after retrain.rollout_timeout; now the
    # rollout records its own outcome. Kept so incidents tables written before still read (as closed).
    UNFINISHED = "unfinished"


INCIDENT_CLOSED = frozenset({IncidentStatus.PROMOTED, IncidentStatus.ROLLED_BACK, IncidentStatus.STOPPED,
                             IncidentStatus.REJECTED, IncidentStatus.FAILED, IncidentStatus.UNFINISHED})
# a job runs (submitted, running), or has started the rollout that will close the incident (retrained)
INCIDENT_FOLLOWED = frozenset({IncidentStatus.SUBMITTED, IncidentStatus.RUNNING, IncidentStatus.RETRAINED})


ALIAS_NAMES = ("champion", "challenger", "previous")


class Aliases(BaseModel):
    """Who is champion, challenger and previous: the control plane's record, which MLflow's aliases project."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    champion: str | None = None
    challenger: str | None = None
    previous: str | None = None

    def promoted(self, version: str) -> Aliases:
        """`version` becomes champion; the champion it replaces becomes previous; it is no longer challenger."""
        if version == self.champion:
            return self
        return Aliases(champion=version, challenger=None if self.challenger == version else self.challenger,
                       previous=self.champion or self.previous)

    def admitted(self, version: str) -> Aliases:
        """A version that passed the gate: champion when there is none yet, else challenger."""
        if self.champion is None:
            return self.promoted(version)
        return self if version == self.champion else self.model_copy(update={"challenger": version})

    def moved(self, alias: str, version: str) -> Aliases:
        """`alias` set to `version` by hand (a new champion keeps the old one as previous)."""
        return self.promoted(version) if alias == "champion" else self.model_copy(update={alias: version})

    def role_of(self, version: str) -> str | None:
        return next((name for name in ALIAS_NAMES if getattr(self, name) == version), None)


class RolloutState(BaseModel):
    """A progressive rollout as the control plane keeps it (its controller holds none of its own)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    champion: str
    challenger: str
    status: RolloutStatus = RolloutStatus.RUNNING
    step: int = 0
    step_started: str = ""  # ISO time
    started: str = ""  # when the rollout began: every look analyses the traffic since (one sequential test per check)
    failures: int = 0
    reason: str = ""
    # the last versions of the inference log and labels before the rollout's window: reads start after them
    log_version: int = -1
    labels_version: int = -1
    history: list[dict] = []  # each decision (advance, failure) and the latest look that decided nothing
    rules: dict = {}  # the spec's rollout section it started with (a restart keeps it)
    incident: str | None = None  # the incident the challenger answers (its retraining job started the rollout)

    @property
    def active(self) -> bool:
        return self.status in ROLLOUT_ACTIVE


class SpecRevision(BaseModel):
    """The spec every loop runs on: the digest of its redacted document and where that document is stored."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    digest: str
    uri: str


class ServingState(BaseModel):
    """The control plane's document (the `serving_state` table): what is served, by which keys, which rollout runs,
    where each served version's package lives, and who is champion. Every field has a default, so a document written
    by an older mlray reads; a field this mlray does not know is refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    plan: dict | None = None  # a `TrafficPlan` as a dict
    keys: list[str] | None = None  # accepted API-key hashes; None: never set
    rollout: RolloutState | None = None
    rollout_revision: int = 0  # the revision at which the rollout last changed (its compare-and-swap)
    packages: dict[str, str] = {}  # served version → its package's artifact URI
    aliases: Aliases | None = None  # None: not yet taken over from the registry (a document from before)
    request_id_secret: str | None = None
    serve: dict | None = None  # the `serve` section of the last deploy, pushed to the ingress (None: never set)
    spec: SpecRevision | None = None  # handed over by the last deploy or `monitor start` (None: never)
    audit_entries: list[dict] = []  # the audit entries of the change this revision made, committed with it

    def document(self) -> dict:
        return self.model_dump(mode="json")


class MonitorCheckpoint(BaseModel):
    """The drift monitor's document (the `monitor_state` table): where it is in the inference log and the labels,
    the windows it has seen, its live-quality buffers and when it last ran the schedule and upkeep. Serialised as the
    dict it replaced (same keys, same JSON: times as ISO text), so a table written before reads; every field has a
    default; a field this mlray does not know is refused. Mutable: the monitor updates it, then commits it."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    epoch: str = Field(default_factory=lambda: uuid.uuid4().hex[:8])  # names this monitor's windows and incidents
    created: datetime = Field(default_factory=utc_now)  # the schedule's slots count from here
    cursor: tuple[int, int] = (0, 0)  # [log commit version, rows of it consumed]: where the next window starts
    seq: int = 0  # the next window's number
    labels_version: int = -1  # the last labels commit taken
    history: list[dict] = []  # the last windows ({seq, drifted, score_drift, quality_drop, rows}), oldest first
    # `LiveQuality.to_state()`: model version → [key, label, prediction, score, segments, probabilities] rows (trailing
    # Nones left out)
    quality: dict[str, list] = {}
    pending_labels: list[list] = []  # [request_id, row, label, at] of labels waiting for their logged prediction
    champion: str | None = None  # whose reference the last window was checked against
    schedule_slot: int = 0  # the last schedule period acted on
    last_upkeep: datetime = Field(default_factory=utc_now)

    @field_serializer("created", "last_upkeep")
    def _iso(self, at: datetime) -> str:
        return at.isoformat()

    def document(self) -> dict:
        """As JSON; a value JSON lacks a type for is written as its text, as the state table's `json.dumps` did."""
        return self.model_dump(mode="json", fallback=str)


Document = TypeVar("Document", bound=BaseModel)


def read_document(model: type[Document], table: str, revision: int, document: dict) -> Document:
    """A state table's document as its typed model; one written by a newer mlray (a field this one does not know) is
    refused in one line naming the table, revision and field."""
    return _validated(model, document, f"{table} revision {revision} is not a document this mlray reads")


def read_row(model: type[Document], table: str, key: str, row: dict) -> Document:
    """A table's row as its typed model; one this mlray cannot read (an unknown status or verdict, a missing value) is
    refused in one line naming the table, the row and the field."""
    return _validated(model, row, f"{table} row {key} is not one this mlray reads")


def _validated(model: type[Document], data: dict, refusal: str) -> Document:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise UserError(f"{refusal}: {'.'.join(map(str, first['loc']))}: {first['msg']}") from None


class WindowVerdict(StrEnum):
    DRIFT = "drift"
    OK = "ok"
    UNSEEN = "unseen_context"  # most rows fall in periods (hours, weekdays) the reference never saw: not judged


class WindowReport(BaseModel):
    """One window's drift report: a row of the `drift_reports` table, whose columns are its fields (the quality held
    there as JSON). A value the table holds as null reads as the field's default."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    seq: int  # the window's number, from 0
    epoch: str  # the monitor's state this window belongs to
    at: datetime  # when it was checked
    first_row_at: datetime | None = None
    last_row_at: datetime | None = None
    rows: int
    champion: str  # whose reference the window was compared with
    start: list[int]  # [log version, offset] of its first row
    end: list[int]  # ... and just after its last
    columns: list[str] = []
    p_values: list[float] = []
    distances: list[float] = []
    threshold: float | None = None
    drifted: list[str] = []
    score_p_value: float | None = None
    score_distance: float | None = None
    score_drift: bool = False
    mmd_p_value: float | None = None
    mmd_drift: bool = False
    quality: dict[str, dict[str, float]] = {}  # model version → live metrics
    quality_drop: float | None = None  # the champion's, on the retraining policy's metric
    verdict: WindowVerdict  # by the retraining policy's rule
    seconds: float | None = None  # how long the checks took
    context: dict | None = None  # how the reference was matched to the window's periods (`mlray.monitor.context`)
    estimated: dict[str, dict[str, float]] = {}  # before labels: metric → {value, low, high} (90% interval)
    estimated_drop: float | None = None  # the champion's estimate below its offline metric (the policy's metric)
    priors: dict[str, dict[str, float]] = {}  # class → its estimated share {value, low, high}
    prior_shift: list[str] = []  # classes whose share left the training split's interval
    # the other versions served (challenger, shadow): version → {rows, shadow, score_p_value, score_drift, estimated,
    # priors}, each against its own reference (or {rows, shadow, error} when that could not be loaded)
    versions: dict[str, dict] = {}
    prior_source: str | None = None  # what the class shares were compared with: 'matched' (the window's hours) or
    source_priors: dict[str, dict[str, float]] = {}  # 'validation' (the split's shares); and those shares
    # once labels are in: CBPE's estimate on the champion's last labelled rows against what their labels say
    # (`estimated.AssumptionCheck`); 'outside' names the metrics that left their band: concept drift
    assumptions: dict = {}
    # per value of each train.slices column, against the reference's rows of it (`segments.check_segments`):
    # {tested, flagged: [[column, value]], worst: [...], unseen, missing}; reported, not part of the verdict
    segments: dict = {}


class IncidentEvent(BaseModel):
    """One event of an incident: its row of the `incidents` table."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    at: datetime
    status: IncidentStatus
    actor: str
    detail: str | None = None


class Incident(BaseModel):
    """An incident as its events folded in order: the last event's status and time, each field as last recorded."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    incident_id: str
    opened: datetime
    updated: datetime
    status: IncidentStatus
    events: list[IncidentEvent]
    cause: str | None = None
    detail: str | None = None
    evidence: dict | None = None
    windows: list[int] | None = None
    job_id: str | None = None
    challenger: str | None = None

    @property
    def closed(self) -> bool:
        return self.status in INCIDENT_CLOSED
