"""Row types of the prompt readers and the per-row validation every format shares.

Validation is row-level on purpose: one bad prompt in a million should become one error row
in the run's errors table, not a failed job.
"""

import math
from dataclasses import dataclass

import pyarrow as pa

from specray.schema import ERROR_SCHEMA

DOMAINS = ("code", "math", "logic", "chat")


@dataclass(frozen=True)
class PromptRow:
    """A valid prompt; `index` is its 0-based record position in the dataset."""

    id: str
    prompt: str
    domain: str | None
    index: int


@dataclass(frozen=True)
class ErrorRow:
    """A rejected record, stored with ERROR_SCHEMA; `source` is the file it came from."""

    id: str
    source: str
    reason: str


@dataclass
class PromptBatch:
    """One batch of a streamed dataset: the valid rows and the errors found among the same records."""

    rows: list[PromptRow]
    errors: list[ErrorRow]


def describe(value) -> str:
    """Short type/value description for error messages (never the whole prompt)."""
    text = repr(value)
    return f"{type(value).__name__} {text[:40] + '...' if len(text) > 40 else text}"


def normalise_id(raw, fallback: str) -> tuple[str | None, str | None]:
    """(id, None) for a usable id, (None, reason) otherwise; a missing (null) id falls back to the row position."""
    if raw is None:
        return fallback, None
    if isinstance(raw, bool) or not isinstance(raw, (str, int)):
        return None, f"id must be a string or an integer, got {describe(raw)}"
    text = str(raw)
    if not text.strip():
        return None, "id is empty"
    return text, None


def prompt_problem(prompt) -> str | None:
    """Why a prompt value is unusable, or None when it is fine."""
    if prompt is None or (isinstance(prompt, float) and math.isnan(prompt)):
        return "prompt is missing (null or NaN)"
    if not isinstance(prompt, str):
        return f"prompt must be a string, got {describe(prompt)}"
    if not prompt.strip():
        return "prompt is empty or whitespace-only"
    return None


def normalise_domain(raw) -> tuple[str | None, str | None]:
    """(domain or None, None) when usable, (None, reason) for a value outside DOMAINS."""
    if raw is None or (isinstance(raw, float) and math.isnan(raw)):
        return None, None
    if isinstance(raw, str) and raw.strip().lower() in DOMAINS:
        return raw.strip().lower(), None
    if isinstance(raw, str) and not raw.strip():
        return None, None
    return None, f"unknown domain {describe(raw)}; expected one of {', '.join(DOMAINS)}"


class RowValidator:
    """Turns raw records into PromptRow/ErrorRow, remembering the ids seen to reject duplicates.

    The id set is the only state that grows with the dataset (one short string per row).
    """

    def __init__(self) -> None:
        self.seen: set[str] = set()

    def check(self, raw_id, prompt, domain, index: int, fallback_id: str, source: str) -> PromptRow | ErrorRow:
        """Validate one record; the first record with a given id owns it, later ones are errors under their position."""
        row_id, reason = normalise_id(raw_id, fallback_id)
        if reason:
            return ErrorRow(fallback_id, source, reason)
        if row_id in self.seen:  # keyed by its position: under its id it would shadow the first occurrence's row
            return ErrorRow(fallback_id, source, f"duplicate id {row_id!r} (first occurrence kept)")
        self.seen.add(row_id)  # even when the first occurrence is itself an error row: an id is output once
        reason = prompt_problem(prompt)
        if reason is None:
            domain, reason = normalise_domain(domain)
        if reason:
            return ErrorRow(row_id, source, reason)
        return PromptRow(row_id, prompt, domain, index)


def errors_table(errors: list[ErrorRow]) -> pa.Table:
    """Error rows as an Arrow table with ERROR_SCHEMA, ready for a Parquet sink."""
    return pa.Table.from_pylist([e.__dict__ for e in errors], schema=ERROR_SCHEMA)
