"""What a live program reads of a stream: its items with their payloads, in insertion order."""

from __future__ import annotations

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..columns import ITEM
from . import _schema as S
from ._columns import CREATED_AT, PAYLOAD, PAYLOAD_REF, SOURCE
from ._records import Stream

ITEM_ROW = "item_row"  # the store's own item id: grows in insertion order
ITEM_COLUMNS = (ITEM, PAYLOAD, PAYLOAD_REF, SOURCE, CREATED_AT, ITEM_ROW)


def items_frame(conn: Connection, stream: Stream, *, after: int | None = None) -> pd.DataFrame:
    """The stream's items in insertion order (those stored after row ``after``)."""
    i = S.items
    query = (sa.select(i.c.external_id, i.c.payload, i.c.payload_ref, i.c.source, i.c.created_at, i.c.id)
             .where(i.c.stream_id == stream.id).order_by(i.c.id))
    if after is not None:
        query = query.where(i.c.id > after)
    frame = pd.DataFrame(conn.execute(query).all(), columns=list(ITEM_COLUMNS))
    frame[ITEM] = frame[ITEM].astype(object)
    frame[ITEM_ROW] = frame[ITEM_ROW].astype("int64")
    return frame

