"""`specray detect`: stream a prompt file through the domain detector and write one JSON line per prompt."""

import argparse
import json
import sys
from pathlib import Path

from specray.data.readers import ReaderConfig, read_prompts
from specray.domains.detector import DomainDetector, resolve_domains


def detect_main(prompts_path: str | Path, out_path: str | Path, config: ReaderConfig | None = None,
                detector_path: str | Path | None = None) -> dict:
    """Write {"id", "domain", "confidence"} per valid prompt; a domain given in the input is kept (confidence 1.0).

    Rejected rows are reported on stderr and counted; returns {"prompts": n, "errors": m}."""
    detector = DomainDetector.load(detector_path)
    counts = {"prompts": 0, "errors": 0}
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with open(out_path, "w", encoding="utf-8") as out:
        for batch in read_prompts(prompts_path, config):
            for row, confidence in resolve_domains(batch.rows, detector):
                out.write(json.dumps({"id": row.id, "domain": row.domain, "confidence": round(confidence, 4)}) + "\n")
            for err in batch.errors:
                print(f"skipped {err.key} ({err.source}): {err.reason}", file=sys.stderr)
            counts["prompts"] += len(batch.rows)
            counts["errors"] += len(batch.errors)
    return counts


def add_detect_parser(subparsers) -> argparse.ArgumentParser:
    """Register `detect` on an argparse subparsers object; the handler is stored as `handler`."""
    p = subparsers.add_parser("detect", help="detect the domain (code/math/logic/chat) of each prompt")
    p.add_argument("--prompts", required=True, help="Parquet file/dir, JSONL file, or `datasets` save_to_disk dir")
    p.add_argument("--out", required=True, help="output JSONL: one {id, domain, confidence} per prompt")
    p.add_argument("--prompt-column", default="prompt")
    p.add_argument("--id-column", default="id")
    p.add_argument("--limit", type=int, default=None, help="read at most this many records")
    p.add_argument("--detector", default=None, help="detector artifact (default: the shipped one)")
    p.set_defaults(handler=_run)
    return p


def _run(args: argparse.Namespace) -> int:
    config = ReaderConfig(prompt_column=args.prompt_column, id_column=args.id_column, limit=args.limit)
    counts = detect_main(args.prompts, args.out, config, args.detector)
    print(f"{counts['prompts']} prompts -> {args.out}; {counts['errors']} rows rejected", file=sys.stderr)
    return 0
