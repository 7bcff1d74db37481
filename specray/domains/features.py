"""Text features of the domain detector, shared by training (sklearn) and inference (numpy).

Passing this analyzer to sklearn's TfidfVectorizer means training and the numpy re-implementation
tokenise identically by construction, instead of re-deriving sklearn's tokeniser by hand.
"""

import re

_TOKEN = re.compile(r"[a-z_]+|\d+(?:[.,]\d+)*|[^\sa-z_\d]{1,3}")
_DIGITS = re.compile(r"\d")
_SPACES = re.compile(r"\s+")
WORD_NGRAMS = (1, 2)
CHAR_NGRAMS = (3, 5)


def word_tokens(text: str) -> list[str]:
    """Lower-cased words, numbers collapsed to <num> (the values say nothing about the domain), operator runs."""
    return ["<num>" if t[0].isdigit() else t for t in _TOKEN.findall(text.lower())]


def analyze(text: str) -> list[str]:
    """Word uni/bi-grams ("w ...") and within-word char 3-5-grams ("c ..."), digits mapped to 0."""
    toks = word_tokens(text)
    feats = [f"w {t}" for t in toks]
    feats += [f"w {a} {b}" for a, b in zip(toks, toks[1:])]
    for word in _SPACES.sub(" ", _DIGITS.sub("0", text.lower())).split():
        padded = f" {word} "
        for n in range(CHAR_NGRAMS[0], CHAR_NGRAMS[1] + 1):
            if len(padded) <= n:  # a short word counts once, as itself
                feats.append(f"c {padded}")
                break
            feats += [f"c {padded[i:i + n]}" for i in range(len(padded) - n + 1)]
    return feats
