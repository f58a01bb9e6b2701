"""Column names of the frames the store reads and writes, beyond those in :mod:`loop.columns`."""

from __future__ import annotations

from typing import Final

ANNOTATION_ID: Final = "annotation_id"
TASK_ID: Final = "task_id"
RATIONALE: Final = "rationale"
EVIDENCE: Final = "evidence"
SUGGESTION: Final = "suggestion"
SUGGESTION_CONFIDENCE: Final = "suggestion_confidence"
GUIDELINE_VERSION: Final = "guideline_version"
CREATED_AT: Final = "created_at"
IDEMPOTENCY_KEY: Final = "idempotency_key"
FLAGS: Final = "flags"

RESOLUTION_ID: Final = "resolution_id"
METHOD: Final = "method"
CONFIDENCE: Final = "confidence"
RESOLVED_AT: Final = "resolved_at"
SUPERSEDES: Final = "supersedes"
SUPERSEDES_KEY: Final = "supersedes_key"
ACTOR: Final = "actor"
WHY: Final = "reason_text"

PAYLOAD: Final = "payload"
PAYLOAD_REF: Final = "payload_ref"
SOURCE: Final = "source"
PROBS: Final = "probs"
SIGNALS: Final = "signals"
