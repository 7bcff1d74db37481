"""`specray retrain`: traces in, a new registry version of every learned stop-policy kind out.

The kinds are the registered ones with a `Learned` record (`specray.policies.kinds`): what each trains on,
how it is fitted and which knob replay tunes come from there. Per kind and per draft source (label runs may draft every prompt with each source): one global model on
every domain's tokens plus one per domain with enough rows; a domain with too few uses the global model
(the registry's fallback), and the metrics say so. Artifacts of the `model` source keep the plain
`<domain>` names; other sources' are `<domain>__<source>` (`specray.policies.sources.registry_name`).
Beside them, kind `draft_sources` records per domain how fast each source decoded (replayed tokens/ms
of its best static lookahead under its own cost model): the prior of `draft: auto`. Thresholds
and k_max are picked by replaying held-out rounds under a cost model measured from the same traces.
The global artifact records which trace files (and how many rows each) it was trained on, so
`--if-new-traces N` can skip a retrain by reading Parquet footers only.
"""

import argparse
import json
import logging
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from specray.distributed.manifest import ManifestError
from specray.policies.artifacts import ArtifactError
from specray.policies.draft_prior import KIND as PRIOR_KIND, prior_meta
from specray.policies.kinds import PolicyKind, learned_kinds
from specray.policies.registry import GLOBAL, artifact_stem, publish
from specray.policies.sources import DEFAULT as DEFAULT_SOURCE, NONE, registry_name
from specray.storage import is_remote, read_bytes
from specray.training.fit import predict
from specray.training.metrics import auc, classifier_metrics
from specray.training.replay import Costs, best_static, build_rounds, estimate_costs, tune
from specray.training.trace_reader import HELDOUT_BUCKETS, TraceData, TraceFile, find_trace_files, read_traces_streaming

log = logging.getLogger(__name__)

THRESHOLDS = np.round(np.arange(0.05, 1.0, 0.05), 2)


@dataclass(frozen=True)
class View:
    """The token rows one kind trains on, with that kind's model inputs and labels."""

    domain: np.ndarray
    prompt_key: np.ndarray
    iteration: np.ndarray
    depth: np.ndarray
    accepted: np.ndarray
    evaluated: np.ndarray
    accept_prob: np.ndarray
    inputs: np.ndarray
    labels: np.ndarray

    @property
    def heldout(self) -> np.ndarray:
        return self.prompt_key % HELDOUT_BUCKETS == 0


def kind_view(kind: PolicyKind, data: TraceData) -> View | None:
    """The rows `kind` trains on: every token for `features`, the tokens that kept a hidden state for `hidden`
    (None when the traces kept none); labels as the kind's record names them."""
    retraining = kind.learned.retraining
    if retraining.inputs == "hidden":
        if not len(data.hidden_index):
            return None
        i = data.hidden_index
    else:
        i = slice(None)
    view = View(data.domain[i], data.prompt_key[i], data.iteration[i], data.depth[i], data.accepted[i], data.evaluated[i],
                data.accept_prob[i], getattr(data, retraining.inputs), None)
    return replace(view, labels=getattr(view, retraining.labels))


def fit_model(kind: PolicyKind, view: View, mask: np.ndarray, steps: int):
    return kind.learned.retraining.fit(view.inputs[mask], view.labels[mask], steps)


def train_kind(kind: PolicyKind, view: View, domains: list[str], costs: Costs, min_rows: int, steps: int) -> tuple[dict, dict]:
    """Models, metrics and tuned budgets for one kind: ({name: (tensors, meta)}, report)."""
    train = ~view.heldout & view.evaluated
    models = {GLOBAL: fit_model(kind, view, train, steps)}
    uses = {}
    for code, domain in enumerate(domains):
        mine = train & (view.domain == code)
        enough = mine.sum() >= min_rows and 0 < view.accepted[mine].sum() < mine.sum()
        if enough and domain != GLOBAL:
            models[domain] = fit_model(kind, view, mine, steps)
        uses[domain] = domain if domain in models else GLOBAL
    heldout = np.flatnonzero(view.heldout)
    preds = {name: predict(model, view.inputs[heldout]) for name, model in models.items()}
    held_domain, held_eval = view.domain[heldout], view.evaluated[heldout]
    label = view.accepted[heldout].astype(np.float32)

    per_domain, transfer = {}, {name: {} for name in models}
    for code, domain in enumerate(domains):
        rows = held_eval & (held_domain == code)
        per_domain[domain] = {
            "model": uses[domain],
            "train_rows": int((train & (view.domain == code)).sum()),
            **classifier_metrics(preds[uses[domain]][rows], label[rows]),
        }
        for name in models:
            value = auc(preds[name][rows], label[rows]) if rows.any() else None
            transfer[name][domain] = None if value is None else round(value, 4)
    report = {"domains": per_domain, "transfer_auc": transfer, "fallback_to_global": sorted(d for d, u in uses.items() if u == GLOBAL)}

    artifacts = {}
    for name, model in models.items():
        rows = np.ones(len(heldout), bool) if name == GLOBAL else held_domain == domains.index(name)
        budget = tune_budget(kind, view, heldout[rows], preds[name][rows], costs)
        meta = {"kind": kind.name, **budget, "metrics": per_domain.get(name, {"model": GLOBAL, "train_rows": int(train.sum())})}
        meta |= kind.learned.retraining.meta(view.inputs)
        artifacts[name] = ({k: v.detach().clone() for k, v in model.state_dict().items()}, meta)
        report.setdefault("replay", {})[name] = budget.get("replay")
    return artifacts, report


def tune_budget(kind: PolicyKind, view: View, rows: np.ndarray, prob: np.ndarray, costs: Costs) -> dict:
    """Threshold and k_max that maximise replayed tokens/ms, beside the best static K on the same rounds."""
    if len(rows) == 0:
        return {"replay": {"rounds": 0, "note": "no held-out rounds; factory defaults apply"}}
    rounds = build_rounds(view.prompt_key[rows], view.iteration[rows], view.depth[rows], view.accepted[rows], prob)
    value, k_max, rate = tune(rounds, costs, kind.learned.retraining.lengths, THRESHOLDS)
    static_k, static_rate = best_static(rounds, costs)
    replay = {
        "rounds": int(len(rounds.length)),
        "tokens_per_ms": round(rate, 5),
        "best_static_k": static_k,
        "best_static_tokens_per_ms": round(static_rate, 5),
        "speedup_vs_best_static": round(rate / static_rate, 4) if static_rate else None,
    }
    return {kind.threshold_knob: value, "k_max": k_max, "replay": replay}


def source_part(data: TraceData, code: int) -> TraceData:
    """The tokens, rounds and hidden states of one draft source: each source's rounds are its own (a label
    run drafts the same prompt and iteration once per source), and so are its costs and its policies."""
    mine = data.source == code
    index = np.full(len(mine), -1, np.int64)
    index[mine] = np.arange(int(mine.sum()))
    hidden_rows = mine[data.hidden_index] if len(data.hidden_index) else np.zeros(0, bool)
    return replace(
        data, domain=data.domain[mine], prompt_key=data.prompt_key[mine], iteration=data.iteration[mine], depth=data.depth[mine],
        features=data.features[mine], accepted=data.accepted[mine], evaluated=data.evaluated[mine],
        accept_prob=data.accept_prob[mine], rounds=data.rounds[data.round_source == code], source=data.source[mine],
        round_source=data.round_source[data.round_source == code],
        hidden=data.hidden[hidden_rows] if len(hidden_rows) else data.hidden, hidden_index=index[data.hidden_index[hidden_rows]],
    )


def source_rates(data: TraceData, costs: Costs) -> dict[str, dict]:
    """Per domain (and `global`): replayed tokens/ms of the best static lookahead on this source's rounds,
    with the evidence behind it. Rounds a source did not draft (no n-gram match) leave no trace rows, so
    a source that often skips drafting looks faster here than it is; the live choice corrects that."""
    out = {}
    for name, mine in [(GLOBAL, np.ones(len(data.domain), bool)), *((d, data.domain == i) for i, d in enumerate(data.domains))]:
        if not mine.any():
            continue
        rounds = build_rounds(data.prompt_key[mine], data.iteration[mine], data.depth[mine], data.accepted[mine],
                              np.ones(int(mine.sum()), np.float32))
        k, rate = best_static(rounds, costs)
        evaluated = data.evaluated[mine]
        out[name] = {"tokens_per_ms": round(rate, 6), "best_static_k": k, "prompts": int(len(np.unique(data.prompt_key[mine]))),
                     "rounds": int(len(rounds.length)),
                     "evaluated_tokens": int(evaluated.sum()),
                     "acceptance": round(float(data.accepted[mine][evaluated].mean()), 4) if evaluated.any() else None}
    return out


def used_files(registry: str | Path) -> dict[str, int]:
    """Trace files (path -> rows) the newest version of any learned kind read or skipped; empty when there is none."""
    seen = {}
    for kind in learned_kinds():
        try:
            stem, _ = artifact_stem(registry, kind, GLOBAL)
            data = json.loads(read_bytes(f"{stem}.json") or b"{}").get("data", {})
        except (ArtifactError, OSError, ValueError):  # StorageError is a ValueError
            continue
        seen |= {**data.get("files", {}), **data.get("skipped", {})}
    return seen


def new_trace_rows(files: list[TraceFile], registry: str | Path) -> int:
    """Rows in files the newest version has not seen (a committed file is immutable).

    Skipped files count as seen, so one bad file does not trigger a retrain on every check."""
    seen = used_files(registry)
    return sum(f.rows for f in files if seen.get(f.path) != f.rows)


def data_span(files: list[TraceFile], skipped: list[tuple[str, str]], data: TraceData) -> dict:
    """What a version was trained on: runs, rows, file mtimes as the time range, and the file manifest."""
    bad = {path for path, _ in skipped}
    used = [f for f in files if f.path not in bad]
    mtimes = [f.mtime for f in used]
    return {
        "runs": sorted(data.runs),
        "rows": int(len(data.domain)),
        "rows_by_domain": {d: int((data.domain == i).sum()) for i, d in enumerate(data.domains)},
        "time_range": [_utc(min(mtimes)), _utc(max(mtimes))] if mtimes else None,
        "skipped_files": len(skipped),
        "files": {f.path: f.rows for f in used},
        "skipped": {f.path: f.rows for f in files if f.path in bad},
    }


def _utc(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


def retrain(trace_dirs: list[str | Path], registry: str | Path, if_new_traces: int = 0, min_rows: int = 2000, steps: int = 600, batch_size: int = 65_536, max_hidden_rows: int = 500_000) -> dict:
    """Train and publish; returns a report (versions, metrics, skipped files), or why nothing was done."""
    files, unreadable = find_trace_files(trace_dirs)
    if if_new_traces:
        new = new_trace_rows(files, registry)
        if new < if_new_traces:
            return {"retrained": False, "new_rows": new, "reason": f"{new} new trace rows < {if_new_traces}"}
    for path, why in unreadable:
        log.warning("skipping trace file %s: %s", path, why)
    data = read_traces_streaming(files, batch_size=batch_size, max_hidden_rows=max_hidden_rows)
    skipped = unreadable + data.skipped
    if skipped:
        log.warning("%d trace file(s) skipped as corrupt or schema-drifted", len(skipped))
    if not len(data.domain) or not data.evaluated.any():
        raise ValueError(f"no usable trace rows under {', '.join(map(str, trace_dirs))}")
    span = data_span(files, skipped, data)
    shared = {"data": {k: v for k, v in span.items() if k not in ("files", "skipped")}}
    report = {"retrained": True, "skipped_files": [f"{path}: {why}" for path, why in skipped], "versions": {}, "metrics": {},
              "cost_model": {}, "by_source": {}, **shared}
    artifacts: dict[str, dict] = {}
    rates: dict[str, dict[str, dict]] = {}
    for code, source in enumerate(data.sources):
        part = source_part(data, code)
        if not part.evaluated.any():
            continue
        costs = estimate_costs(part.rounds)
        cost_model = {**costs.__dict__, "draft_to_verify_ratio": round(costs.ratio, 4)}
        report["by_source"].setdefault(source, {})["cost_model"] = cost_model
        views = {name: kind_view(kind, part) for name, kind in learned_kinds().items()}
        for kind, view in views.items():
            if view is None:
                continue
            trained, metrics = train_kind(learned_kinds()[kind], view, part.domains, costs, min_rows, steps)
            for name, (tensors, meta) in trained.items():
                meta |= shared | {"cost_model": cost_model, "draft_source": source}
                if name == GLOBAL:
                    meta |= {"report": metrics, "data": span}
                artifacts.setdefault(kind, {})[registry_name(name, source)] = (tensors, meta)
            report["by_source"][source].setdefault("metrics", {})[kind] = metrics
        for domain, rate in source_rates(part, costs).items():
            rates.setdefault(domain, {})[source] = rate
        if source == DEFAULT_SOURCE or NONE not in rates[GLOBAL]:  # the target's cost, best seen beside its own draft
            target_only = {"tokens_per_ms": round(1 / float(costs.round_ms(np.zeros(1))[0]), 6), "note": "one token per verification"}
            for domain in rates:  # timed on as many prompts as the source whose costs it comes from
                rates[domain][NONE] = {**target_only, "prompts": rates[domain].get(source, {}).get("prompts", 1)}
    default = report["by_source"].get(DEFAULT_SOURCE, {})  # the model draft's, as before sources were told apart
    report["metrics"], report["cost_model"] = default.get("metrics", {}), default.get("cost_model", {})
    for kind, named in artifacts.items():
        report["versions"][kind] = publish(registry, kind, named)
    report["versions"][PRIOR_KIND] = publish(registry, PRIOR_KIND, {d: ({}, prior_meta(r)) for d, r in rates.items()})
    report["draft_sources"] = rates
    return report


def add_retrain_parser(subparsers) -> None:
    p = subparsers.add_parser("retrain", help="train DISCO / SpecDec++ stop policies from traces into a policy registry")
    p.add_argument("--traces", nargs="+", required=True, help="run dirs (committed traces) or dirs of trace Parquet files")
    p.add_argument("--out", required=True, help="policy registry root")
    p.add_argument("--if-new-traces", type=int, default=0, metavar="N", help="do nothing unless N trace rows arrived since the newest version")
    p.add_argument("--min-rows", type=int, default=2000, help="labelled training rows a domain needs for a model of its own")
    p.add_argument("--steps", type=int, default=600, help="optimizer steps per model")
    p.add_argument("--max-hidden-rows", type=int, default=500_000, help="hidden states kept in memory (whole prompts subsampled)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads for training")
    p.set_defaults(handler=retrain_command)


def retrain_command(args) -> int:
    """Nothing to train on (no such dir, no usable rows) or a registry that cannot be written is one line
    on stderr naming the dir or file, and exit 2; a bad trace file is skipped with a warning."""
    torch.set_num_threads(args.threads)  # models this small are overhead-bound: more threads only contend
    missing = [d for d in args.traces if not is_remote(d) and not Path(d).is_dir()]  # a URI is checked as it is listed
    try:
        if missing:
            raise ValueError(f"{missing[0]}: no such directory")
        report = retrain(args.traces, args.out, args.if_new_traces, args.min_rows, args.steps, max_hidden_rows=args.max_hidden_rows)
    except (ValueError, OSError, ManifestError) as exc:  # ArtifactError is a ValueError
        print(f"specray retrain: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    """`specray retrain` without the rest of the CLI, for `jobs/retrain.py`."""
    logging.basicConfig(level=logging.INFO)
    parser = argparse.ArgumentParser(prog="specray")
    add_retrain_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["retrain", *(sys.argv[1:] if argv is None else argv)])
    return args.handler(args)
