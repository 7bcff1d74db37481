"""Row types of the prompt readers and the per-row validation every format shares.

Validation is row-level on purpose: one bad prompt in a million should become one error row
in the run's errors table, not a failed job.

Ids and positions are two key spaces that never mix. An error row carries its record's own id only
when that record owns the id (its first occurrence, with a usable id); otherwise (a duplicate, an
id that is not usable text, a line that did not decode) its `id` is null and it is keyed by its
`position` (`line:N` in a JSONL file, `row:N` in a Parquet/`datasets` dataset). Were positions
written into the id column, an error row `line:3` could take the id of a real prompt whose id is
the string "line:3", and the sink, which writes every key once, would drop that prompt's result.
Rows without an id get their position as id (`row:4`); when that collides with an explicit id, the
later record is a duplicate error row naming both positions, never a lost row.
"""

import math
from dataclasses import dataclass, field

import pyarrow as pa

from specray.schema import ERROR_SCHEMA

DOMAINS = ("code", "math", "logic", "chat")


@dataclass(frozen=True)
class PromptRow:
    """A valid prompt; `index` is its 0-based record position in the dataset, `position` its `line:N` / `row:N`."""

    id: str
    prompt: str
    domain: str | None
    index: int
    position: str | None = field(default=None, compare=False)  # carried into the row's error row, if it gets one


@dataclass(frozen=True)
class ErrorRow:
    """A rejected record, stored with ERROR_SCHEMA; `source` is the file it came from.

    `id` is the record's own id when the record owns it, else None; `position` (`line:N` / `row:N`)
    says where the record is. The sink keys the row by `id` when it has one, else by `position`.
    """

    id: str | None
    source: str
    reason: str
    position: str | None = None

    def __post_init__(self) -> None:
        if self.id is None and self.position is None:
            raise ValueError("an error row needs an id or a position")

    @property
    def key(self) -> str:
        """What identifies the row to a reader: its id, else its position."""
        return self.id if self.id is not None else self.position


@dataclass
class PromptBatch:
    """One batch of a streamed dataset: the valid rows and the errors found among the same records."""

    rows: list[PromptRow]
    errors: list[ErrorRow]


def describe(value) -> str:
    """Short type/value description for error messages (never the whole prompt)."""
    text = repr(value)
    return f"{type(value).__name__} {text[:40] + '...' if len(text) > 40 else text}"


def encodable(text: str) -> bool:
    """Whether `text` can be written as UTF-8 (Python strings may hold lone surrogates, e.g. from JSON `"\\ud800"`)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def escaped(text: str) -> str:
    """`text` with anything UTF-8 cannot carry written as a backslash escape, so it can be stored and shown."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def normalise_id(raw, fallback: str) -> tuple[str | None, str | None]:
    """(id, None) for a usable id, (None, reason) otherwise; a missing (null) id falls back to the row position."""
    if raw is None:
        return fallback, None
    if isinstance(raw, bool) or not isinstance(raw, (str, int)):
        return None, f"id must be a string or an integer, got {describe(raw)}"
    text = str(raw)
    if not text.strip():
        return None, "id is empty"
    if not encodable(text):
        return None, f"id is not valid Unicode text (a lone surrogate): '{escaped(text)}'"
    return text, None


def prompt_problem(prompt) -> str | None:
    """Why a prompt value is unusable, or None when it is fine."""
    if prompt is None or (isinstance(prompt, float) and math.isnan(prompt)):
        return "prompt is missing (null or NaN)"
    if not isinstance(prompt, str):
        return f"prompt must be a string, got {describe(prompt)}"
    if not prompt.strip():
        return "prompt is empty or whitespace-only"
    if not encodable(prompt):
        return "prompt is not valid Unicode text (it holds a lone surrogate)"
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


class MissingPrompt:
    """The prompt value of a record that has no prompt column at all (JSONL objects without the key)."""

    def __init__(self, column: str) -> None:
        self.column = column


class RowValidator:
    """Turns raw records into PromptRow/ErrorRow, remembering the ids seen to reject duplicates.

    The id set is the only state that grows with the dataset (one short string per row).
    """

    def __init__(self) -> None:
        self.seen: set[str] = set()

    def check(self, raw_id, prompt, domain, index: int, position: str, source: str) -> PromptRow | ErrorRow:
        """Validate one record; the first record with a given id owns it, later ones are errors keyed by their position."""
        row_id, reason = normalise_id(raw_id, position)
        if reason:
            return ErrorRow(None, source, reason, position)
        if row_id in self.seen:  # keyed by its position: under its id it would shadow the first occurrence's row
            what = "has no id, and its position as id is a duplicate id" if raw_id is None else "duplicate id"
            return ErrorRow(None, source, f"{what} {row_id!r} (first occurrence kept)", position)
        self.seen.add(row_id)  # even when the first occurrence is itself an error row: an id is output once
        if isinstance(prompt, MissingPrompt):
            return ErrorRow(row_id, source, f"missing prompt column {prompt.column!r}", position)
        reason = prompt_problem(prompt)
        if reason is None:
            domain, reason = normalise_domain(domain)
        if reason:
            return ErrorRow(row_id, source, reason, position)
        return PromptRow(row_id, prompt, domain, index, position)


def errors_table(errors: list[ErrorRow]) -> pa.Table:
    """Error rows as an Arrow table with ERROR_SCHEMA, ready for a Parquet sink; text UTF-8 cannot carry is escaped."""
    rows = [{k: escaped(v) if isinstance(v, str) else v for k, v in e.__dict__.items()} for e in errors]
    return pa.Table.from_pylist(rows, schema=ERROR_SCHEMA)
