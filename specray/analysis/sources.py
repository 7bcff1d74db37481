"""The draft source behind each trace row, for a report that splits by source.

Rows stored before the `draft_source` column read as null. A label run then always drafted with the
draft model (its policy was `static:K` with no `draft=` option), so its null rows are `model`; any other
null row drafted with whatever its run's spec said, which the row does not tell: `unrecorded`.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from specray.policies.sources import DEFAULT

UNRECORDED = "unrecorded"


def row_sources(traces: pa.Table) -> pa.ChunkedArray:
    """`draft_source` with nulls resolved as above."""
    label = pc.fill_null(pc.equal(traces["source"], "label"), False)
    guess = pc.if_else(label, pa.scalar(DEFAULT), pa.scalar(UNRECORDED))
    return pc.coalesce(traces["draft_source"], guess)
