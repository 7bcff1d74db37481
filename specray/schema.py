"""Arrow schemas of what a run stores: one trace row per drafted token, one result row per prompt.

Kept free of torch so that training and analysis can read traces without importing the engine.
"""

import pyarrow as pa

TRACE_ORIGINS = ("generate", "label", "bench")  # what produced a trace row: its origin, in the `source` column

TRACE_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("source", pa.string()),  # one of TRACE_ORIGINS
        ("prompt_id", pa.string()),
        ("domain", pa.string()),
        ("iteration", pa.int32()),  # 0-based draft/verify round within the prompt
        ("depth", pa.int16()),  # 1-based position inside this round's draft
        ("gen_position", pa.int32()),  # 0-based index of the token among generated tokens
        ("draft_token", pa.int32()),
        ("draft_prob", pa.float32()),  # q(token) under the draft's (warped) distribution
        ("target_prob", pa.float32()),  # p(token) under the target's (warped) distribution
        ("accept_prob", pa.float32()),  # min(1, p / q)
        ("accepted", pa.bool_()),
        ("evaluated", pa.bool_()),  # false for tokens after the first rejection
        ("entropy", pa.float32()),  # entropy of the draft distribution, nats
        ("topk_probs", pa.list_(pa.float32())),  # the draft's top-10 probabilities
        ("policy", pa.string()),
        ("policy_version", pa.string()),
        ("lookahead", pa.int16()),  # tokens proposed this round
        ("stop_reason", pa.string()),  # why drafting stopped this round
        ("draft_ms", pa.float32()),  # wall time of this round's drafting (whole batch)
        ("verify_ms", pa.float32()),  # wall time of this round's verification (whole batch)
    ]
)

HIDDEN_FIELD = pa.field("hidden", pa.list_(pa.float32()))  # the draft's last hidden state behind the token

# Label runs only: hidden states cost 4 bytes x the draft's hidden size per row, more than the rest of the row.
LABEL_TRACE_SCHEMA = TRACE_SCHEMA.append(HIDDEN_FIELD)


def trace_schema(hidden: bool) -> pa.Schema:
    """The trace schema of a run that records hidden states (label runs) or not, as the engine writes it."""
    return LABEL_TRACE_SCHEMA if hidden else TRACE_SCHEMA


# What drafted a row's tokens: one of specray.policies.spec.DRAFT_SOURCES, or "none" (target-only). The
# engine does not know it (a batch's spec does), so the worker stamps it on results and traces after the
# engine ran. Added after runs were stored without it: such rows read as null ("not recorded"), and a
# writer that does not set it stores null; `specray.analysis.sources.row_sources` says what null means.
DRAFT_SOURCE_FIELD = pa.field("draft_source", pa.string())
ADDED_COLUMNS = (DRAFT_SOURCE_FIELD,)  # nullable columns a table may lack: stored as null


def stored_trace_schema(hidden: bool) -> pa.Schema:
    """The trace schema a run stores: the engine's, plus the draft source of each row."""
    return trace_schema(hidden).append(DRAFT_SOURCE_FIELD)


RESULT_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("domain", pa.string()),
        ("prompt", pa.string()),
        ("output_text", pa.string()),
        ("output_tokens", pa.list_(pa.int32())),
        ("prompt_tokens", pa.int32()),
        ("new_tokens", pa.int32()),
        ("iterations", pa.int32()),
        ("drafted", pa.int32()),
        ("accepted", pa.int32()),
        ("wall_ms", pa.float32()),
        ("stop_reason", pa.string()),  # eos | max_new_tokens | stop_string
        ("policy", pa.string()),
        ("policy_version", pa.string()),
        ("target", pa.string()),
        ("draft", pa.string()),
    ]
)
STORED_RESULT_SCHEMA = RESULT_SCHEMA.append(DRAFT_SOURCE_FIELD)  # what a run stores (see DRAFT_SOURCE_FIELD)

# `id`: the record's own id when it owns it, else null; `position`: `line:N` / `row:N` in the input. An
# error row is keyed by its id when it has one, else by its position: the two never share a key space.
ERROR_SCHEMA = pa.schema([("id", pa.string()), ("source", pa.string()), ("reason", pa.string()),
                          ("position", pa.string())])

DOMAINS = ("code", "math", "logic", "chat")  # what the detector predicts and budgets are kept for

TOPK = 10  # width of `topk_probs`, and of DISCO's probability features
