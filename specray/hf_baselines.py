"""The peer users already have: transformers' own assisted generation, as benchmark baselines.

    hf-static:K     num_assistant_tokens=K, constant schedule, no confidence stop
    hf-heuristic    transformers' +2/-1 schedule (persistent across calls, as transformers does it)
    hf-confidence   assistant_confidence_threshold=0.4 with transformers' own online refit
    hf-ngram:K      prompt lookup decoding, prompt_lookup_num_tokens=K (no draft model)

transformers runs assisted generation one prompt at a time, so these rows are batch size 1 whatever
the benchmark's batch size.
"""

import torch

HF_MODES = ("hf-static", "hf-heuristic", "hf-confidence", "hf-ngram")
NGRAM = "hf-ngram"


def hf_settings(spec: str) -> dict:
    """The generation-config fields for a baseline spec (the assistant's, or prompt lookup's)."""
    name, _, value = spec.partition(":")
    if name not in HF_MODES:
        raise ValueError(f"unknown transformers baseline '{spec}'; known: hf-static:K, hf-heuristic, hf-confidence, hf-ngram:K")
    if name in ("hf-static", NGRAM):
        if not value.isdigit() or int(value) < 1:
            raise ValueError(f"'{spec}': expected {name}:K with an integer K >= 1")
        if name == NGRAM:
            return {"prompt_lookup_num_tokens": int(value)}
        return {"num_assistant_tokens": int(value), "num_assistant_tokens_schedule": "constant", "assistant_confidence_threshold": 0.0}
    if value:
        raise ValueError(f"'{spec}' takes no value")
    if name == "hf-heuristic":
        return {"num_assistant_tokens": 20, "num_assistant_tokens_schedule": "heuristic", "assistant_confidence_threshold": 0.0}
    return {"num_assistant_tokens": 20, "num_assistant_tokens_schedule": "constant", "assistant_confidence_threshold": 0.4}


def configure_assistant(draft, spec: str) -> None:
    """Reset the draft's assistant settings at the start of a baseline run (prompt lookup has no assistant)."""
    if not spec.startswith(NGRAM):
        for key, value in hf_settings(spec).items():
            setattr(draft.generation_config, key, value)


@torch.no_grad()
def hf_generate(target, draft, spec: str, prompt: list[int], max_new_tokens: int, temperature: float, top_k: int, top_p: float) -> list[int]:
    ids = torch.tensor([prompt], device=target.device)
    sampling = {"do_sample": True, "temperature": temperature, "top_k": top_k or None, "top_p": top_p} if temperature > 0 else {"do_sample": False}
    source = hf_settings(spec) if spec.startswith(NGRAM) else {"assistant_model": draft}
    out = target.generate(
        ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
        pad_token_id=target.generation_config.pad_token_id or 0, **source, **sampling,
    )
    return out[0, len(prompt) :].tolist()
