"""Draft training prompts never share a run of words with the prompts drafts are evaluated on."""

from specray.domains.corpus import style_rows
from specray.training.contamination import N, without_overlap, word_runs
from specray.training.distill import PROMPT_SOURCES, evaluation_prompts


def test_word_runs_ignore_case_and_punctuation():
    assert word_runs("One, two THREE four!", 3) == {("one", "two", "three"), ("two", "three", "four")}
    assert word_runs("too short", 3) == set()


def test_a_shared_run_of_n_words_drops_the_row_and_a_shorter_one_does_not():
    reference = "Alice, Bob and Carol sit in a row facing north today."
    shared = {"prompt": "Puzzle: " + " ".join(reference.split()[:N]) + " -- who is left?"}
    shorter = {"prompt": "Puzzle: " + " ".join(reference.split()[: N - 1]) + " -- who is left?"}
    assert without_overlap([shared, shorter], [reference]) == [shorter]


def test_style_rows_are_deterministic_unique_and_cover_every_domain():
    rows = style_rows(per_domain=50, seed=3)
    assert rows == style_rows(per_domain=50, seed=3)
    assert len({r["id"] for r in rows}) == len(rows) == 200
    assert {r["domain"] for r in rows} == {"code", "math", "logic", "chat"}


def test_the_styles_source_shares_no_run_with_any_evaluation_prompt():
    rows = PROMPT_SOURCES["styles"](None, None, None)
    evaluated = set().union(*(word_runs(p) for p in evaluation_prompts()))
    assert rows and not any(word_runs(r["prompt"]) & evaluated for r in rows)
    assert len(rows) < len(style_rows())  # the templates do echo benchmark phrasing: some rows go
