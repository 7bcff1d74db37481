"""`specray distill`: train a small draft for a target from the target's own responses.

The draft is a few layers at the target's width (initialised from the target's
first layers) around the target's frozen embeddings, final norm and LM head,
optionally restricted to the target's most frequent output tokens. It learns
the target's top-k distribution (KL) on the target's responses to the
project's prompts, within a wall-clock budget.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import shlex
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from specray.domains.corpus import style_rows
from specray.models import load_model
from specray.models.draft import FORMAT as DRAFT_FORMAT
from specray.models.draft import (
    OWN_PREFIX, build_draft, head_token_ids, load_draft, own_columns, read_draft_metadata, save_draft,
)
from specray.models.feature_draft import FORMAT as FEATURE_DRAFT_FORMAT
from specray.models.feature_draft import build_feature_draft, checked_layers, load_feature_draft, save_feature_draft
from specray.models.refs import DEFAULT_TARGET, canonical_ref
from specray.training.contamination import without_overlap
from specray.training.distill_data import (
    TeacherData, concat_teacher_data, eos_token_ids, interleave_domains, load_teacher_data, padded, save_teacher_data, sharded_teacher_data,
    teacher_data,
)
from specray.training.distill_eval import agreement_report, greedy_matches, latency_ratio
from specray.training.distill_features import feature_matches, target_states, train_feature_draft
from specray.training.distill_loop import fit
from specray.training.self_instruct import self_instruct

# named prompt sources for `--prompts` (anything else is a prompts file): (target, tokenizer, args) -> rows
PROMPT_SOURCES = {
    "self-instruct": lambda target, tokenizer, args: self_instruct(
        target, tokenizer, args.self_instruct_per_topic, seed=args.seed),
    "styles": lambda target, tokenizer, args: without_overlap(style_rows(), evaluation_prompts()),
}

log = logging.getLogger(__name__)


def head_subset(data: TeacherData, size: int, always: set[int]) -> torch.Tensor:
    """The `size` tokens the target emits most (its top-k mass ranks those it never emitted), plus `always`."""
    counts = Counter(t for r in data.responses for t in r)
    mass = torch.zeros(int(data.topk_ids.max()) + 1 if data.topk_ids.numel() else 1)
    mass.index_add_(0, data.topk_ids.flatten().long(), data.topk_logprobs.flatten().float().exp())
    ranked = [t for t, _ in counts.most_common()] + mass.argsort(descending=True).tolist()
    chosen: dict[int, None] = dict.fromkeys(sorted(always))
    for t in ranked:
        if len(chosen) >= size:
            break
        chosen.setdefault(t, None)
    return torch.tensor(sorted(chosen), dtype=torch.long)


def subset_coverage(ids: torch.Tensor | None, data: TeacherData) -> float:
    """Share of the target's tokens in `data` that the draft head can emit at all."""
    tokens = [t for r in data.responses for t in r]
    if ids is None or not tokens:
        return 1.0
    return float(torch.isin(torch.tensor(tokens), ids).float().mean())


def make_batch(data: TeacherData, indices: list[int], offsets: list[int]) -> dict:
    """Right-padded prompt+response ids and, flat over response positions, where each is predicted from."""
    ids, mask = padded([data.prompts[i] + data.responses[i] for i in indices])
    rows, cols, topk_rows, tokens = [], [], [], []
    for b, i in enumerate(indices):
        p, r = len(data.prompts[i]), len(data.responses[i])
        rows += [b] * r
        cols += range(p - 1, p - 1 + r)
        topk_rows += range(offsets[i], offsets[i] + r)
        tokens += data.responses[i]
    rows_t, topk_t = torch.tensor(rows), torch.tensor(topk_rows)
    return {"ids": ids, "mask": mask, "rows": rows_t, "cols": torch.tensor(cols), "tokens": torch.tensor(tokens),
            "topk_ids": data.topk_ids[topk_t].long(), "topk_logprobs": data.topk_logprobs[topk_t].float()}


def column_lookup(token_ids: torch.Tensor | None, vocab: int) -> torch.Tensor:
    """Full-vocab id -> head column (-1 when the head cannot emit it)."""
    if token_ids is None:
        return torch.arange(vocab)
    lookup = torch.full((vocab,), -1, dtype=torch.long)
    lookup[token_ids] = torch.arange(len(token_ids))
    return lookup


def distill_loss(draft, batch: dict, lookup: torch.Tensor, loss: str) -> torch.Tensor:
    """KL to the target's renormalised top-k (over tokens the head can emit), or CE on its greedy token."""
    hidden = draft.model(input_ids=batch["ids"], attention_mask=batch["mask"]).last_hidden_state
    logits = own_columns(draft.lm_head, hidden[batch["rows"], batch["cols"]])
    logq = logits.float().log_softmax(-1)
    if loss == "ce":
        col = lookup[batch["tokens"]]
        keep = col >= 0
        return -logq[keep].gather(-1, col[keep, None]).mean()
    cols = lookup[batch["topk_ids"]]
    p = batch["topk_logprobs"].exp() * (cols >= 0)
    p = p / p.sum(-1, keepdim=True).clamp(min=1e-9)
    return -(p * logq.gather(-1, cols.clamp(min=0))).sum(-1).mean()


def train_draft(draft, data: TeacherData, minutes: float, lr: float = 2e-3, batch_size: int = 8, loss: str = "kl",
                seed: int = 0, max_steps: int | None = None) -> dict:
    """AdamW on the draft's own layers until the wall-clock budget (or max_steps) is spent."""
    lookup = column_lookup(getattr(draft.lm_head, "token_ids", None), draft.lm_head.out_features)
    offsets = data.response_offsets()
    draft.train()
    stats = fit([p for p in draft.parameters() if p.requires_grad],
                lambda indices: distill_loss(draft, make_batch(data, indices, offsets), lookup, loss),
                len(data.prompts), minutes, lr, batch_size, seed, max_steps)
    draft.eval()
    return stats


def prompt_rows(path: str | None, split: str) -> list[dict]:
    """Training prompts: a user file (any format the data readers take) or a built-in split."""
    if path is None:
        from specray.data.builtin import builtin_prompts

        return builtin_prompts(split)
    from specray.data.readers import read_prompts

    return [{"id": r.id, "prompt": r.prompt, "domain": r.domain or "chat"} for b in read_prompts(path) for r in b.rows]


def evaluation_prompts() -> list[str]:
    """What drafts are measured on: the built-in heldout split and the public and styled evaluation files."""
    from specray.data.builtin import builtin_prompts
    from specray.domains.evaluate import eval_rows

    return [row["prompt"] for row in builtin_prompts("heldout") + eval_rows()]


def cached_teacher_data(path: str | None, make) -> tuple[TeacherData, bool]:
    """Reuse teacher data saved at `path` (several files: comma-separated) and say so, else make it and
    save it there when a path is given."""
    paths = [p for p in (path or "").split(",") if p]
    if paths and all(Path(p).is_file() for p in paths):
        log.info("reusing teacher data from %s", ", ".join(paths))
        parts = [load_teacher_data(p) for p in paths]  # files made one after another: their times add up
        return replace(concat_teacher_data(parts), seconds=round(sum(d.seconds for d in parts), 1)), True
    if len(paths) > 1:
        missing = [p for p in paths if not Path(p).is_file()]
        raise FileNotFoundError(f"teacher data files not found: {', '.join(missing)} (only a single file is generated)")
    data = make()
    if paths:
        save_teacher_data(data, paths[0])
    return data, False


def training_data(args: argparse.Namespace, target_ref: str, target, tokenizer) -> TeacherData:
    """The target's responses to the training prompts, within `--data-minutes`, on `--data-workers` processes;
    `--prompts self-instruct` has the target write the prompts first, `--prompts styles` takes the domain
    detector's extra templates."""
    source = PROMPT_SOURCES.get(args.prompts)
    rows = source(target, tokenizer, args) if source else prompt_rows(args.prompts, "distill")
    gen = dict(max_new_tokens=args.max_new_tokens, batch_size=args.gen_batch_size, seed=args.seed,
               minutes=args.data_minutes)
    if args.data_workers > 1:
        return sharded_teacher_data(target_ref, rows, args.data_workers, dtype=args.teacher_dtype, **gen)
    return teacher_data(target, tokenizer, rows, **gen)


@dataclass(frozen=True)
class DraftKind:
    """How one kind of draft is built around a target, trained, evaluated on held-out data and saved."""

    build: Callable  # (target, head_ids, args) -> draft
    load: Callable  # (target, draft_dir) -> a saved draft of this kind, its own weights trainable again
    format: str  # what a saved draft of this kind records as its "format"
    train: Callable  # (draft, teacher, data, args) -> stats
    matches: Callable  # (draft, teacher, data) -> per response, agreement at each position
    save: Callable  # (draft, target, target_ref, out, meta, dtype) -> Path
    settings: Callable  # (args, draft) -> what the metadata records of this kind's own settings


def _train_layers(draft, teacher, data: TeacherData, args) -> dict:
    return train_draft(draft, data, args.budget_minutes, lr=args.lr, batch_size=args.batch_size, loss=args.loss,
                       seed=args.seed, max_steps=args.max_steps)


def _train_features(draft, teacher, data: TeacherData, args) -> dict:
    started = time.monotonic()
    states = target_states(teacher, data, draft.target_layers)
    stats = train_feature_draft(draft, data, states, args.budget_minutes, lr=args.lr, batch_size=args.batch_size,
                                seed=args.seed, max_steps=args.max_steps,
                                autocast=None if args.train_dtype == "float32" else getattr(torch, args.train_dtype))
    return {**stats, "state_seconds": round(time.monotonic() - started - stats["train_seconds"], 1)}


def _load_layers(target, path: str):
    draft = load_draft(path, target, torch.float32)
    for name, param in draft.named_parameters():
        param.requires_grad_(name.startswith(OWN_PREFIX))
    return draft


def _load_features(target, path: str):
    draft = load_feature_draft(path, target, torch.float32)
    for param in draft.own_parameters().values():
        param.requires_grad_(True)
    return draft


DRAFT_KINDS = {
    "layers": DraftKind(
        build=lambda target, ids, args: build_draft(target, args.layers, ids),
        load=_load_layers,
        format=DRAFT_FORMAT,
        train=_train_layers,
        matches=lambda draft, teacher, data: greedy_matches(draft, data),
        save=save_draft,
        settings=lambda args, draft: {"layers": draft.config.num_hidden_layers, "loss": args.loss},
    ),
    "eagle": DraftKind(
        build=lambda target, ids, args: build_feature_draft(target, ids, args.seed, read_layers(args, target)),
        load=_load_features,
        format=FEATURE_DRAFT_FORMAT,
        train=_train_features,
        matches=lambda draft, teacher, data: feature_matches(
            draft, data, target_states(teacher, data, draft.target_layers)),
        save=save_feature_draft,
        settings=lambda args, draft: {"loss": "state regression + KL on response positions, unrolled once",
                                      "train_dtype": args.train_dtype, "target_layers": list(draft.target_layers)},
    ),
}


def read_layers(args: argparse.Namespace, target) -> tuple[int, ...]:
    """`--feature-layers` and the target's final state: the target layers a new feature-level draft reads."""
    if args.feature_layers and args.kind != "eagle":
        raise ValueError(f"--feature-layers {args.feature_layers!r}: only an eagle draft reads target layers, not --kind {args.kind}")
    final = target.config.num_hidden_layers
    try:
        extra = [int(i) for i in args.feature_layers.split(",") if i.strip()]
        return checked_layers([*extra, final], final)
    except ValueError as exc:
        raise ValueError(f"--feature-layers {args.feature_layers!r}: {exc}") from None


def run_distill(args: argparse.Namespace, command: str) -> dict:
    """Teacher data -> head subset -> training -> held-out evaluation -> draft dir. Returns the metadata."""
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    wall = time.monotonic()
    kind = DRAFT_KINDS[args.kind]
    start = starting_draft(args.init_from, args.kind) if args.init_from else None  # before hours of teacher data
    target_ref = canonical_ref(args.target)
    target, tokenizer = load_model(target_ref)
    draft = kind.load(target, args.init_from) if start else None  # a draft for another target fails here
    read_layers(args, target)  # so does a bad --feature-layers
    teacher = teacher_model(target, args.teacher_dtype)
    gen = dict(max_new_tokens=args.max_new_tokens, batch_size=args.gen_batch_size, seed=args.seed)
    train, train_reused = cached_teacher_data(
        args.teacher_data, lambda: training_data(args, target_ref, teacher, tokenizer))
    heldout, heldout_reused = cached_teacher_data(args.eval_data, lambda: teacher_data(
        teacher, tokenizer, interleave_domains(prompt_rows(None, "heldout"), args.seed)[:args.eval_prompts], **gen))
    log.info("teacher data: %d sequences / %d tokens for training, %d for evaluation",
             len(train.prompts), train.num_tokens, len(heldout.prompts))
    if draft is None:
        ids = head_subset(train, args.head_size, eos_token_ids(target, tokenizer)) if args.head_size else None
        draft = kind.build(target, ids, args)
    ids = head_token_ids(draft)
    stats = kind.train(draft, teacher, train, args)
    draft.requires_grad_(False)
    report = agreement_report(kind.matches(draft, teacher, heldout), heldout.domains, k=4)
    latency = latency_ratio(draft, teacher)
    log.info("held-out agreement %s; latency %s", report, latency)
    meta = {
        "training": {
            "command": command, "kind": args.kind, "seed": args.seed, **kind.settings(args, draft), "lr": args.lr,
            "batch_size": args.batch_size, "budget_minutes": args.budget_minutes,
            "teacher": {"sequences": len(train.prompts), "tokens": train.num_tokens,
                        "topk": int(train.topk_ids.shape[1]), "dtype": args.teacher_dtype,
                        "seconds": train.seconds,
                        **({"reused_from": args.teacher_data} if train_reused else
                           {"prompts": args.prompts or "builtin:distill", "max_new_tokens": args.max_new_tokens,
                            "data_minutes": args.data_minutes, "data_workers": args.data_workers})},
            **stats,
            "wall_seconds": round(time.monotonic() - wall, 1),
            **({"init_from": start} if start else {}),
        },
        "head_subset_coverage": {"train": round(subset_coverage(ids, train), 4),
                                 "heldout": round(subset_coverage(ids, heldout), 4)},
        "heldout": {"split": "builtin:heldout", "sequences": len(heldout.prompts), "teacher_seconds": heldout.seconds,
                    **({"reused_from": args.eval_data} if heldout_reused else {}),
                    "by_domain": report},
        "latency": latency,
    }
    kind.save(draft, target, target_ref, args.out, meta, dtype=getattr(torch, args.save_dtype))
    log.info("draft written to %s", args.out)
    return meta


def starting_draft(path: str, kind: str) -> dict:
    """What `--init-from` records of the draft it continues: its directory and its own training record (so the
    metadata keeps the whole chain of commands). A directory holding no draft of `kind` fails here, naming it."""
    try:
        meta = read_draft_metadata(path)
    except (OSError, ValueError) as exc:
        raise ValueError(f"--init-from {path}: no readable draft metadata ({exc})") from None
    if meta.get("format") != DRAFT_KINDS[kind].format:
        raise ValueError(f"--init-from {path}: holds a {meta.get('format')!r} draft; --kind {kind} continues a "
                         f"{DRAFT_KINDS[kind].format!r} one")
    return {"path": str(path), "training": meta.get("training")}


def teacher_model(target, dtype: str):
    """The target in the precision its wide work (batched generation, reading whole sequences) runs in."""
    if dtype == str(target.dtype).removeprefix("torch."):
        return target
    return copy.deepcopy(target).to(getattr(torch, dtype))


def add_distill_parser(subparsers) -> argparse.ArgumentParser:
    """Register `specray distill` on the CLI's subparsers."""
    p = subparsers.add_parser("distill", help="train a small draft for a target from its own responses",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--target", default=DEFAULT_TARGET, help="target ref (hub id, dir, .gguf, embedded)")
    p.add_argument("--out", required=True, help="output draft directory")
    p.add_argument("--kind", choices=sorted(DRAFT_KINDS), default="layers",
                   help="layers: a few target-width layers; eagle: one layer reading the target's hidden states")
    p.add_argument("--layers", type=int, default=2, help="draft layers, copied from the target's first ones")
    p.add_argument("--feature-layers", default="",
                   help="eagle: target layers read beside the final state, comma-separated (e.g. 2,15: EAGLE-3's "
                        "low and middle layers, fused by a learned projection); default: the final state alone")
    p.add_argument("--budget-minutes", type=float, default=12.0, help="wall-clock training budget")
    p.add_argument("--init-from", default=None,
                   help="continue training this saved draft of the same kind (its layers, target layers and head "
                        "subset are kept; --layers, --feature-layers and --head-size are not read)")
    p.add_argument("--data-minutes", type=float, default=12.0, help="wall-clock budget for generating teacher data")
    p.add_argument("--prompts", default=None,
                   help="training prompts file (default: built-in distill split); 'self-instruct': the target "
                        "writes them from seed topics; 'styles': the domain detector's extra templates")
    p.add_argument("--self-instruct-per-topic", type=int, default=8, help="requests written per seed topic")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--head-size", type=int, default=8192, help="restrict the draft head to this many tokens (0: full)")
    p.add_argument("--loss", choices=("kl", "ce"), default="kl", help="KL to target top-64, or CE on its tokens")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (tests)")
    p.add_argument("--max-new-tokens", type=int, default=128, help="teacher response length")
    p.add_argument("--gen-batch-size", type=int, default=64)
    p.add_argument("--data-workers", type=int, default=1, help="single-thread generation processes (one per core)")
    p.add_argument("--eval-prompts", type=int, default=200, help="held-out prompts to evaluate on")
    p.add_argument("--teacher-data", default=None, help="safetensors file to reuse (or save) training teacher data")
    p.add_argument("--eval-data", default=None, help="safetensors file to reuse (or save) held-out teacher data")
    p.add_argument("--teacher-dtype", choices=("float32", "bfloat16"), default="float32",
                   help="precision the target generates teacher data and reads sequences in")
    p.add_argument("--train-dtype", choices=("float32", "bfloat16"), default="float32",
                   help="eagle: precision of the training step's products (weights stay float32)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--save-dtype", choices=("float32", "float16", "bfloat16"), default="float32")
    p.set_defaults(handler=distill_command)
    return p


def distill_command(args: argparse.Namespace) -> int:
    """`specray distill` from the CLI: its progress (data, steps, loss) is logged, since a run takes minutes;
    the held-out agreement is printed at the end."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    meta = run_distill(args, shlex.join(["specray", *sys.argv[1:]]))
    print(json.dumps({"out": args.out, "heldout": meta["heldout"]["by_domain"], "latency": meta["latency"]}, indent=2))
    return 0


def distill_main(argv: list[str] | None = None) -> dict:
    """Entry point without the full CLI: `distill_main(["--out", "drafts/x"])`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="specray")
    add_distill_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["distill", *argv])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    return run_distill(args, shlex.join(["specray", "distill", *argv]))
