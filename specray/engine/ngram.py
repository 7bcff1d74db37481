"""N-gram drafting (prompt lookup): propose what followed the latest earlier match of the context's tail.

Offline generation often repeats its input — code edits, extraction, summaries quote their source — so
the tokens that followed the last occurrence of the current n-gram are a free guess at what comes next
(transformers' `prompt_lookup_num_tokens`, vLLM's `ngram` proposer). The guess costs no model forward.
As a draft it is a point mass (q = 1 on its token), so rejection sampling accepts it with probability p
and resamples from p with that token removed: the target's distribution is kept exactly.

The longest n in [n_min, n_max] that matches wins; among its matches the latest one, since recent text
predicts the next text best.
"""


def ngram_lookup(tokens: list[int], n_max: int = 3, n_min: int = 1, k: int = 8) -> list[int]:
    """Up to `k` tokens that followed the latest earlier occurrence of the last n tokens (longest n first).

    Returns [] when no n in [n_min, n_max] matches. The match may overlap the tail itself
    (a repeating pattern proposes its own continuation).
    """
    if k < 1 or len(tokens) < 2:
        return []
    for n in range(min(n_max, len(tokens) - 1), n_min - 1, -1):
        tail, last = tokens[-n:], tokens[-1]
        # latest start s < len - n such that tokens[s : s + n] == tail (cheap test on the last token first)
        for start in range(len(tokens) - n - 1, -1, -1):
            if tokens[start + n - 1] == last and tokens[start : start + n] == tail:
                follow = tokens[start + n : start + n + k]
                if follow:
                    return follow
    return []
