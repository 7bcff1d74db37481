"""Forward cost curves of a pair: ms per forward of 1–9 new tokens per row over a 64-token cache, at
batch 1/8/16, in float32 and bf16, for the target and the draft — the numbers `dtype=auto` and the
cost gate act on. Prints a markdown table (min over repeats; run it with nothing else on the cores).

    python jobs/cost_curves.py [--target REF --draft REF] [--repeats 5] [--out curves.json]
"""

import argparse
import copy
import json

import torch

from specray.models import DEFAULT_DRAFT, DEFAULT_TARGET, load_pair
from specray.models.precision import CANDIDATES, dtype_name, forward_ms

WIDTHS = (1, 2, 3, 5, 9)
BATCHES = (1, 8, 16)


def curves(target: str, draft: str, repeats: int) -> list[dict]:
    pair = load_pair(target, draft, dtype="float32")
    rows = []
    for role, model in (("target", pair.target), ("draft", pair.draft)):
        for dtype in CANDIDATES:
            candidate = model if dtype == torch.float32 else copy.deepcopy(model).to(dtype)
            for batch in BATCHES:
                widths = WIDTHS if role == "target" else (1,)
                ms = {w: round(forward_ms(candidate, batch, w, context=64, repeats=repeats), 2) for w in widths}
                rows.append({"model": role, "dtype": dtype_name(dtype), "batch": batch, "ms": ms})
                print(json.dumps(rows[-1]), flush=True)
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| model | dtype | batch | " + " | ".join(f"{w} tok/row" for w in WIDTHS) + " |",
             "|---|---|---:|" + "---:|" * len(WIDTHS)]
    for r in rows:
        cells = [f"{r['ms'][w]:.1f}" if w in r["ms"] else "" for w in WIDTHS]
        lines.append(f"| {r['model']} | {r['dtype']} | {r['batch']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default=DEFAULT_TARGET)
    parser.add_argument("--draft", default=DEFAULT_DRAFT)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out")
    args = parser.parse_args()
    rows = curves(args.target, args.draft, args.repeats)
    print(markdown(rows))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"threads": torch.get_num_threads(), "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
