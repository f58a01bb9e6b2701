"""``GET /v1/me/impact``: annotators see what their answers did to the labels.

Per stream, round and annotator, the figures of :mod:`loop.impact` (the resolver's skill,
answers, confirmed, overturned, pending, disputes won, errors fixed, fixes the retrained model
agrees with, share of the round's error reduction), with each annotator's totals.

Who sees what: an annotator's token sees only its own annotator's figures (asking for another
annotator's is 403); the ``admin`` role is the manager (the store has no other: roles are
``admin``, ``annotator``, ``client``) and sees everyone's, or one person's with
``?annotator=``; a client token gets 403. Without ``?stream=`` the answer covers the caller's
streams (an admin's: every stream).

The answer::

    {"annotator": str | null,
     "rounds": [{"stream", "round", "annotator", "skill", "answers", "confirmed", "overturned",
                 "pending", "disputes_won", "errors_fixed", "errors_fixed_model_right",
                 "share_of_error_reduction", "round_fixes_model_right"}, ...],
     "totals": [{"stream", "annotator", "rounds", "skill", "answers", ..., "share_of_error_reduction"}, ...]}
"""

# No "from __future__ import annotations": FastAPI reads the signatures at run time.

import math
from typing import Any

import pandas as pd
from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse

from loop.columns import ANNOTATOR
from loop.exceptions import ForbiddenError, NotFoundError, SchemaError
from loop.impact import impact_totals
from loop.store import LabelStore, Principal, Role

from .auth import Services, get_services
from .payload import BadRequest
from .tasks import _doc, _own_annotator, _store, annotator_role

__all__ = ["impact_json", "router"]

router = APIRouter()
_NAME_CHARS = 200  # the store's names (streams, annotators)


def _cell(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    return value.item() if hasattr(value, "item") else value


def _rows(frame: pd.DataFrame, stream: str) -> list[dict[str, Any]]:
    frame = frame.rename(columns={ANNOTATOR: "annotator"})
    return [{"stream": stream, **{k: _cell(v) for k, v in row.items()}} for row in frame.to_dict("records")]


def impact_json(store: LabelStore, streams: list[str], annotator: str | None) -> dict[str, Any]:
    """The endpoint's answer over ``streams``, for one ``annotator`` or (None) everyone."""
    rounds: list[dict[str, Any]] = []
    totals: list[dict[str, Any]] = []
    for stream in streams:
        table = store.annotator_impact(stream, annotator=annotator)
        if table.empty:
            continue
        rounds.extend(_rows(table, stream))
        totals.extend(_rows(impact_totals(table), stream))
    return {"annotator": annotator, "rounds": rounds, "totals": totals}


def _scope(store: LabelStore, principal: Principal, stream: str | None, annotator: str | None) -> tuple[list[str],
                                                                                                       str | None]:
    """The streams and the annotator the caller may see (blocking: runs in the store's threads)."""
    if principal.role is not Role.ADMIN:
        own = _own_annotator(principal)
        if annotator is not None and annotator != own:
            raise ForbiddenError("An annotator's token sees only its own impact; a manager (admin token) sees "
                                 "everyone's.")
        annotator = own
    elif annotator is not None:
        try:
            store.annotator(annotator)
        except NotFoundError:
            raise BadRequest("annotator", f"No annotator is called {annotator!r}.", status=404) from None
        except SchemaError:  # the store names its own argument; the caller sent 'annotator'
            raise BadRequest("annotator", "The 'annotator' parameter must be an annotator's name: text of at most "
                             f"{_NAME_CHARS} characters, without NUL characters.", status=422) from None
    if stream is not None:
        return [store.stream(stream).name], annotator
    if annotator is not None:
        return sorted(store.annotator(annotator).streams), annotator
    return [s.name for s in store.streams()], annotator


@router.get("/v1/me/impact", responses={**_doc(404), 200: {"description": "Per round and in total: the caller's "
                                                                          "figures (an admin's: everyone's)"}})
async def my_impact(stream: str | None = Query(None, min_length=1, max_length=_NAME_CHARS,
                                               description="Only this stream (default: the caller's streams)"),
                    annotator: str | None = Query(None, min_length=1, max_length=_NAME_CHARS,
                                                  description="Admins: only this annotator (an annotator's token: "
                                                              "only their own name)"),
                    principal: Principal = Depends(annotator_role),
                    services: Services = Depends(get_services)) -> JSONResponse:
    """What the caller's answers did, per stream and round, with totals: the resolver's skill,
    answers confirmed and overturned, disputes won, fixes the retrained model agrees with, and
    the share of the round's error reduction (:mod:`loop.impact`). An annotator sees their own;
    an admin everyone's."""
    store = _store(services)
    streams, who = await services.run(_scope, store, principal, stream, annotator)
    return JSONResponse(await services.run(impact_json, store, streams, who))
