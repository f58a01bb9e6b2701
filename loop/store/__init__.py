"""labelloop's system of record: the label store on SQLite or PostgreSQL.

The only part of :mod:`loop` that talks to a database. :class:`LabelStore` holds work streams,
annotators, guideline versions, items, model versions and predictions, tasks, annotations,
resolutions and an append-only audit trail; :class:`StreamHistory` keeps a stream's history
in memory and reads only what is new; :func:`upgrade` migrates a database (also run by
``labelloop db upgrade`` and on first use).

Labels are stored as class codes of the stream's ordered class names.
"""

from __future__ import annotations

from ._columns import (ACTOR, ANNOTATION_ID, CONFIDENCE, CREATED_AT, EVIDENCE, GUIDELINE_VERSION, IDEMPOTENCY_KEY,
                       METHOD, PAYLOAD, PAYLOAD_REF, PROBS, RATIONALE, RESOLUTION_ID, RESOLVED_AT, SIGNALS, SOURCE,
                       SUGGESTION, SUGGESTION_CONFIDENCE, SUPERSEDES, SUPERSEDES_KEY, TASK_ID)
from ._engine import URL_ENV_VAR, default_url, normalize_url
from ._records import (Annotation, Annotator, BatchResult, Dispute, Escalation, GuidelineVersion, ModelVersion,
                       Principal, QueueMetrics, Resolution, ResolutionMethod, Role, Stream, StreamMetrics, Suggestion,
                       Task, TaskPreview, TaskStatus)
from ._guidance import addressed_pairs, published_guideline
from ._tasks import EXPERT_TIER, guideline_section
from ._schema import MAX_RATIONALE_CHARS
from .migrate import current_revision, head_revision, upgrade
from .history import StreamHistory
from .store import MAX_SLA, LabelStore

__all__ = [
    "ACTOR", "ANNOTATION_ID", "EXPERT_TIER", "CONFIDENCE", "CREATED_AT", "EVIDENCE", "GUIDELINE_VERSION",
    "IDEMPOTENCY_KEY", "MAX_RATIONALE_CHARS", "MAX_SLA", "METHOD", "PAYLOAD", "PAYLOAD_REF", "PROBS", "RATIONALE",
    "RESOLUTION_ID", "RESOLVED_AT",
    "SIGNALS", "SOURCE", "SUGGESTION", "SUGGESTION_CONFIDENCE", "SUPERSEDES", "SUPERSEDES_KEY", "TASK_ID",
    "URL_ENV_VAR", "Annotation", "Annotator", "BatchResult", "Dispute", "Escalation", "GuidelineVersion",
    "LabelStore", "ModelVersion", "Principal", "QueueMetrics", "Resolution", "ResolutionMethod", "Role", "Stream",
    "StreamHistory", "StreamMetrics", "Suggestion", "Task", "TaskPreview", "TaskStatus", "current_revision",
    "addressed_pairs", "default_url", "guideline_section", "head_revision", "normalize_url", "published_guideline", "upgrade",
]
