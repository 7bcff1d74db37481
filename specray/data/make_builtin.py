"""Regenerate the built-in prompt sets under ``specray/data/prompts/`` (``python -m specray.data.make_builtin``).

Templated from the hand-written blocks in ``specray.data.blocks`` with a fixed seed, so the committed
JSONL files are reproducible. ``distill`` and ``demo`` use the distill templates (demo prompts are
drawn after the distill ones, so the two never share a prompt); ``heldout`` uses its own templates.
``quick``, what `specray generate` runs with no dataset, is the shortest ``demo`` prompts of each
domain (ids kept): a first run should finish in a few minutes on a laptop's CPU, and still show
every domain's acceptance.
"""

import json
import random
from pathlib import Path

from specray.data.blocks import chat, code, logic, maths

DOMAINS = {"code": code, "math": maths, "logic": logic, "chat": chat}
PROMPTS_DIR = Path(__file__).parent / "prompts"
SEED = 20240601
SIZES = {"distill": 450, "heldout": 50, "demo": 10}  # per domain
QUICK_PER_DOMAIN = 2
MAX_MISSES = 200  # consecutive duplicates after which a template counts as exhausted


def unique_prompts(templates: list, n: int, rng: random.Random, seen: set[str], strict: bool = True) -> list[str]:
    """Round-robin over templates until n new prompts; exhausted templates drop out of the rotation.

    With strict=False, running out of templates returns what was found instead of raising."""
    out, live, misses = [], list(templates), {t: 0 for t in templates}
    while len(out) < n and live:
        for t in list(live):
            if len(out) == n:
                break
            p = t(rng).strip()
            if p in seen:
                misses[t] += 1
                if misses[t] >= MAX_MISSES:
                    live.remove(t)
                continue
            misses[t] = 0
            seen.add(p)
            out.append(p)
    if strict and len(out) < n:
        raise ValueError(f"templates exhausted after {len(out)} of {n} prompts")
    return out


def build_sets(seed: int = SEED) -> dict[str, list[dict]]:
    """All three splits as rows {id, prompt, domain}; deterministic in seed."""
    rng = random.Random(seed)
    sets = {name: [] for name in SIZES}
    for domain, blocks in DOMAINS.items():
        seen: set[str] = set()
        train = unique_prompts(blocks.DISTILL, SIZES["distill"] + SIZES["demo"], rng, seen)
        held = unique_prompts(blocks.HELDOUT, SIZES["heldout"], rng, seen)
        parts = {"distill": train[: SIZES["distill"]], "demo": train[SIZES["distill"]:], "heldout": held}
        for name, prompts in parts.items():
            sets[name] += [{"id": f"{name}-{domain}-{i:04d}", "prompt": p, "domain": domain} for i, p in enumerate(prompts)]
    for rows in sets.values():
        rng.shuffle(rows)  # mixed domains, so any prefix of a split is balanced-ish
    sets["quick"] = quick_set(sets["demo"])
    return sets


def quick_set(demo: list[dict], per_domain: int = QUICK_PER_DOMAIN) -> list[dict]:
    """The `per_domain` shortest demo prompts of each domain, domains interleaved; no randomness."""
    shortest = {d: sorted((r for r in demo if r["domain"] == d), key=lambda r: (len(r["prompt"]), r["id"]))[:per_domain]
                for d in DOMAINS}
    return [rows[i] for i in range(per_domain) for rows in shortest.values() if i < len(rows)]


def write_sets(out_dir: Path = PROMPTS_DIR) -> None:
    """Write one JSONL per split."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, rows in build_sets().items():
        with open(out_dir / f"{name}.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


if __name__ == "__main__":
    write_sets()
