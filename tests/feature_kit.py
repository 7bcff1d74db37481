"""Feature-level drafts for tests: the tiny target's own greedy output as teacher data, and a draft trained on
it (kept apart from the test modules so that tests on other machines, such as the GPU tests, import no CLI)."""

import torch
from conftest import GREEDY_MAX_NEW, random_prompts, tiny_tokenizer

from specray.engine.speculative import GenerationConfig, SpeculativeEngine
from specray.models.feature_draft import build_feature_draft
from specray.training.distill_data import TeacherData
from specray.training.distill_eval import agreement_report
from specray.training.distill_features import feature_matches, target_states, train_feature_draft


def greedy_data(target, prompts: list[list[int]]) -> TeacherData:
    """The target's greedy responses to `prompts` (target-only decoding by the engine, batched)."""
    out = SpeculativeEngine(target, target, tiny_tokenizer()).generate(prompts, None, GenerationConfig(max_new_tokens=GREEDY_MAX_NEW))
    empty, n = torch.zeros(0, 4), len(prompts)
    return TeacherData(prompts, [s.tokens for s in out.sequences], empty.int(), empty.half(), ["code"] * n, [str(i) for i in range(n)])


def teacher_data(target) -> TeacherData:
    """The target's own greedy output, the engine tests' prompts among it (so drafts trained on it draft
    runs the target accepts)."""
    return greedy_data(target, random_prompts(16, seed=3) + random_prompts(32, seed=11))


def trained_draft(target, data: TeacherData, target_layers: tuple[int, ...] | None = None):
    """A feature draft reading `target_layers` trained on `data`, with its agreement on it before and after."""
    draft = build_feature_draft(target, seed=0, target_layers=target_layers)
    states = target_states(target, data, draft.target_layers)

    def agreement() -> float:
        return agreement_report(feature_matches(draft, data, states), data.domains)["all"]["agreement"]

    before = agreement()
    stats = train_feature_draft(draft, data, states, minutes=5, lr=1e-2, max_steps=300)
    draft.requires_grad_(False)
    return draft.to(torch.float64), before, agreement(), stats
