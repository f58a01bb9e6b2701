"""What the store hands back: frozen records and the choices it accepts."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any


class ResolutionMethod(str, Enum):
    """How a final label was reached."""

    AUTO = "auto"              # the model's label, accepted by the routing policy
    CONSENSUS = "consensus"    # aggregated from annotators who agreed
    ADJUDICATED = "adjudicated"  # a reviewer settled a disagreement
    EXPERT = "expert"          # an expert's label, overriding the others


class TaskStatus(str, Enum):
    OPEN = "open"
    ASSIGNED = "assigned"
    DONE = "done"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class Stream:
    """A work stream: one labelling problem with its ordered class names (label ``c`` means
    ``classes[c]``)."""

    id: int
    name: str
    classes: tuple[str, ...]
    owner: str | None
    escalation_contact: str | None
    created_at: datetime


@dataclass(frozen=True)
class Annotator:
    id: int
    name: str
    tier: int
    active: bool
    hourly_rate: float
    streams: tuple[str, ...]
    email: str | None = None   # how a Label Studio user is matched to the annotator


@dataclass(frozen=True)
class GuidelineVersion:
    """A version of a stream's labelling guideline; immutable once ``published_at`` is set."""

    id: int
    stream: str
    version: int
    text: str
    examples: Any
    parent_version: int | None
    author: str
    created_at: datetime
    published_at: datetime | None


@dataclass(frozen=True)
class ModelVersion:
    id: int
    name: str
    uri: str | None
    created_at: datetime


@dataclass(frozen=True)
class Task:
    id: int
    stream: str
    item_id: str
    tier: int
    annotator: str | None
    guideline_version: int | None
    status: TaskStatus
    created_at: datetime
    due_at: datetime | None
    idempotency_key: str
    kind: str = "label"        # one of TASK_KINDS: label, expert, double_blind, audit, adjudication
    blind: bool = False        # no suggestion and no other annotator's answer is shown
    round: int | None = None   # the program round that made it
    assigned_at: datetime | None = None
    completed_at: datetime | None = None
    escalated_at: datetime | None = None


@dataclass(frozen=True)
class Annotation:
    """One stored answer (:meth:`LabelStore.answer_task`); ``label`` and ``suggestion`` are
    class codes."""

    id: int
    stream: str
    task_id: int | None
    item_id: str
    annotator: str
    label: int
    rationale: str | None
    evidence: Any
    seconds: float | None
    flags: tuple[str, ...]
    suggestion: int | None
    suggestion_confidence: float | None
    guideline_version: int | None
    source: str | None
    created_at: datetime
    idempotency_key: str


@dataclass(frozen=True)
class Resolution:
    """A final label for an item. A correction is a new resolution naming the one it
    ``supersedes``; the old one stays in the history."""

    id: int
    stream: str
    item_id: str
    label: int
    method: ResolutionMethod
    confidence: float | None
    resolved_at: datetime
    supersedes: int | None
    actor: str | None
    reason: str | None
    idempotency_key: str


@dataclass(frozen=True)
class BatchResult:
    """Outcome of a batched write: rows stored now, and rows a previous call had already
    stored under the same idempotency keys (a retry). ``ids``: the stored id of each row of the
    batch, in the batch's order, where the write reports them (:meth:`LabelStore.add_tasks`,
    so that its caller can link annotations to their tasks and close them by id)."""

    inserted: int
    existing: int
    ids: tuple[int, ...] = field(default=(), compare=False, repr=False)

    @property
    def total(self) -> int:
        return self.inserted + self.existing


@dataclass(frozen=True)
class StreamMetrics:
    """Health of one work stream; NaN where a figure is undefined (e.g. no item has two
    labels, so there is no agreement to measure)."""

    stream: str
    n_items: int
    n_annotations: int
    n_annotators: int
    n_resolved: int
    percent_agreement: float
    krippendorff_alpha: float
    correction_frequency: float
    median_resolution_hours: float
    seconds_per_item: float
    total_cost: float
    cost_per_item: float


class Role(str, Enum):
    """What a bearer token may do: ``admin`` everything; ``annotator`` their own tasks,
    answers and disputes; ``client`` score, route and ingest items."""

    ADMIN = "admin"
    ANNOTATOR = "annotator"
    CLIENT = "client"


@dataclass(frozen=True)
class Principal:
    """Who a valid token speaks for (:meth:`LabelStore.authenticate`)."""

    token_id: int
    role: Role
    name: str
    annotator: str | None
    expires_at: datetime | None = None  # when the token stops working (None: never, unless revoked)


@dataclass(frozen=True)
class Suggestion:
    """What the model proposes for an item, shown on a task that is not blind."""

    label: str
    confidence: float
    route: str | None
    reason: str | None
    confused_pair: tuple[str, str]
    model_version: str


@dataclass(frozen=True)
class TaskPreview:
    """Everything an annotator sees with a task.

    ``suggestion`` and ``examples`` are None on blind tasks (double-blind, audit,
    adjudication), and ``guideline_section`` is then the whole guideline (a section for the
    model's confused pair would reveal the model's guess). Nothing in a preview depends on any
    other annotator's answer.
    """

    task: Task
    classes: tuple[str, ...]
    display: str | None
    payload: Any
    guideline_version: int | None
    guideline_section: str | None
    suggestion: Suggestion | None
    examples: dict[str, list[dict[str, Any]]] | None


@dataclass(frozen=True)
class Dispute:
    """An annotator's objection to a resolved label or a suggestion; settled by an
    adjudication task."""

    id: int
    stream: str
    item_id: str
    annotator: str | None
    target: str
    label: int | None
    reason: str
    status: str
    adjudication_task_id: int | None
    created_at: datetime
    due_at: datetime | None
    escalated_at: datetime | None
    closed_at: datetime | None
    idempotency_key: str


@dataclass(frozen=True)
class Escalation:
    """What :meth:`LabelStore.escalate_overdue` escalated now (ids)."""

    tasks: tuple[int, ...]
    disputes: tuple[int, ...]


@dataclass(frozen=True)
class QueueMetrics:
    """The queues for Prometheus (:meth:`LabelStore.queue_metrics`).

    ``queues``: one row per stream, tier and status (``open``, ``assigned``) with ``depth``,
    ``oldest_seconds`` (age of the oldest task) and ``overdue`` (past ``due_at``).
    ``streams``: one row per stream with ``answers_last_minute``, ``tasks_escalated`` and
    ``disputes_escalated`` (all time: SLA breaches) and ``disputes_open``.
    """

    queues: Any
    streams: Any
