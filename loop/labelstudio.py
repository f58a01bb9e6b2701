"""Label Studio's formats, as plain values: predictions out, annotations in.

No I/O: the store (:meth:`loop.store.LabelStore.import_label_studio`), the ML backend
(``serve/labelstudio.py``) and ``labelloop labelstudio sync`` (``experiments/labelstudio.py``)
all translate through here, so a format lives in one place.

The shapes are Label Studio's own (``label_studio/webhooks/models.py``,
``label_studio_ml/api.py``, labelstud.io/guide/predictions):

- a prediction: ``{"model_version", "score", "result": [{"from_name", "to_name", "type":
  "choices", "value": {"choices": [name]}}, ...]}``; labelloop adds the route's reason as a
  ``textarea`` result (``reason_name``), which a ``<TextArea name="reason" toName="text"
  editable="false"/>`` in the labelling config shows next to the choice;
- an annotation (a webhook's ``annotation``, an export's ``annotations[]``): ``id``,
  ``completed_by`` (a user id; an object with ``email`` in older exports), ``result``,
  ``lead_time``, ``created_at``, ``updated_at``, ``was_cancelled``;
- the task data labelloop pushes: its payload plus ``item_id`` and ``labelloop_task_ids``
  (the labelloop tasks one Label Studio task stands for: two for a double-blind pair).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from ._validation import _describe, fail
from .columns import ITEM

__all__ = ["DELETED_ACTION", "SOURCE", "SYSTEM", "TASK_ID", "TASK_IDS", "Answer", "ControlNames", "annotation_key",
           "item_of", "parse_answer", "prediction", "task_ids_of"]

SYSTEM: Final = "label_studio"           # external_tasks.system
SOURCE: Final = "label_studio"           # annotations.source
DELETED_ACTION: Final = "annotation.deleted_in_label_studio"
TASK_IDS: Final = "labelloop_task_ids"   # task data: the labelloop tasks behind a Label Studio task
TASK_ID: Final = "labelloop_task_id"     # the single-task form export_label_studio wrote before


@dataclass(frozen=True)
class ControlNames:
    """The labelling config's tag names: the ``Choices`` (``from_name``), the object it labels
    (``to_name``) and the read-only ``TextArea`` that shows the route's reason."""

    from_name: str = "label"
    to_name: str = "text"
    reason_name: str = "reason"

    def __post_init__(self) -> None:
        for field in ("from_name", "to_name", "reason_name"):
            value = getattr(self, field)
            if not isinstance(value, str) or not value:
                raise fail(field, "a non-empty tag name of the labelling config", _describe(value))


@dataclass(frozen=True)
class Answer:
    """One Label Studio annotation with a single chosen class."""

    annotation_id: int
    user: int | str          # a user id, or an email when the export names it
    label: str               # the chosen class name
    seconds: float | None
    rationale: str | None
    created_at: str | None
    key: str                 # the idempotency key: one per annotation version


def prediction(classes: Sequence[Any], probs: np.ndarray, *, model_version: str, reason: str | None = None,
               names: ControlNames = ControlNames(), result_id: str | None = None) -> dict[str, Any]:
    """A Label Studio prediction of one item.

    Parameters
    ----------
    classes : sequence of class names, length k
    probs : array, shape (k,)
        Calibrated class probabilities.
    model_version : str
    reason : str, optional
        The route's reason, shown by the labelling config's read-only ``TextArea``.
    names : ControlNames

    Examples
    --------
    >>> p = prediction(["neg", "pos"], np.array([0.2, 0.8]), model_version="m1", reason="confident")
    >>> p["score"], p["result"][0]["value"], p["result"][1]["value"]
    (0.8, {'choices': ['pos']}, {'text': ['confident']})
    """
    probs = np.asarray(probs, dtype=float)
    best = int(np.argmax(probs))
    choice = {"from_name": names.from_name, "to_name": names.to_name, "type": "choices",
              "value": {"choices": [str(classes[best])]}}
    if result_id is not None:
        choice["id"] = result_id
    result = [choice]
    if reason:
        result.append({"from_name": names.reason_name, "to_name": names.to_name, "type": "textarea",
                       "value": {"text": [str(reason)]}})
    return {"model_version": str(model_version), "score": float(probs[best]), "result": result}


def annotation_key(annotation: Mapping[str, Any]) -> str:
    """``labelstudio:<id>@<updated_at>``: a re-sent webhook or a re-pulled export keeps its key;
    an edit in Label Studio changes ``updated_at`` and so becomes a new annotation."""
    stamp = annotation.get("updated_at")
    return f"labelstudio:{annotation['id']}" + (f"@{stamp}" if stamp else "")


def parse_answer(annotation: Mapping[str, Any], *, from_name: str | None, where: str) -> Answer | None:
    """The chosen class of one annotation; None when it was cancelled (skipped) or has no
    ``choices`` result of ``from_name``. ``where`` names it in errors (``"task 3"``)."""
    if not isinstance(annotation, Mapping) or "id" not in annotation:
        raise fail("annotation", "a Label Studio annotation with an 'id'", f"{_describe(annotation)} in {where}")
    if annotation.get("was_cancelled"):
        return None
    results = annotation.get("result") or []
    choices = [r for r in results if r.get("type") == "choices" and (from_name is None or r.get("from_name") == from_name)]
    if not choices:
        return None
    picked = choices[0].get("value", {}).get("choices", [])
    if len(picked) != 1:
        raise fail("label", "exactly one chosen class per annotation", f"{_describe(picked)} in {where}")
    texts = [t for r in results if r.get("type") == "textarea" for t in r.get("value", {}).get("text", [])]
    user = annotation.get("completed_by")
    if isinstance(user, Mapping):
        user = user.get("email") or user.get("id")
    if user is None or isinstance(user, bool) or not isinstance(user, (int, str)):
        raise fail("completed_by", "a Label Studio user id or email", f"{_describe(user)} in {where}")
    seconds = annotation.get("lead_time")
    return Answer(annotation_id=int(annotation["id"]), user=user, label=str(picked[0]),
                  seconds=None if seconds is None else float(seconds), rationale="\n".join(texts) if texts else None,
                  created_at=annotation.get("created_at"), key=annotation_key(annotation))


def task_ids_of(data: Mapping[str, Any]) -> list[int]:
    """The labelloop tasks a Label Studio task stands for (its data's ``labelloop_task_ids``)."""
    ids = data.get(TASK_IDS)
    if ids is None:
        one = data.get(TASK_ID)
        return [] if one is None else [int(one)]
    return [int(i) for i in ids]


def item_of(data: Mapping[str, Any], where: str) -> str:
    if not isinstance(data, Mapping) or ITEM not in data:
        raise fail("data", f"task data holding {ITEM!r} (a task labelloop pushed)",
                   f"{where} with data keys {sorted(data) if isinstance(data, Mapping) else _describe(data)}")
    return str(data[ITEM])
