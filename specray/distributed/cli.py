"""`specray generate|label [CONFIG.yaml] [key=value ...]` and `python jobs/{generate,label}.py ...`: the
same arguments, one job.

With no arguments: the embedded pair, a local Ray instance, the built-in demo prompts, output under
./runs/<run_id>/. Prints the job summary as JSON on stdout; progress goes to stderr. `label` is the
labelling run: every domain drafts `label.depth` tokens a round and traces keep the draft's hidden
states (`source=label`), for `specray retrain`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from specray.config import ConfigError, load_config
from specray.data.readers import DatasetError
from specray.distributed.job import JobError, run_job
from specray.distributed.sink import SinkError

COMMANDS = {
    "generate": "run the generation job on Ray",
    "label": "run a labelling job on Ray: fixed-depth drafts, traces with hidden states, for retrain",
}


def add_generate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", nargs="?", help="YAML config (configs/default.yaml lists every key); may be omitted")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. generation.max_new_tokens=64")


def add_generate_parser(subparsers) -> argparse.ArgumentParser:
    """Register `generate` on an argparse subparsers object; the handler is stored as `handler`."""
    return _add_job_parser(subparsers, "generate")


def add_label_parser(subparsers) -> argparse.ArgumentParser:
    """Register `label`: the same arguments and job as `generate`, run as a labelling run."""
    return _add_job_parser(subparsers, "label")


def _add_job_parser(subparsers, command: str) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(command, help=COMMANDS[command], description=__doc__)
    add_generate_arguments(parser)
    parser.set_defaults(handler=job_handler, job=command)
    return parser


def config_and_overrides(config: str | None, overrides: list[str]) -> tuple[str | None, list[str]]:
    """argparse puts a first `key=value` into `config`; move it back unless a file by that name exists."""
    if config is not None and "=" in config and not Path(config).is_file():
        return None, [config, *overrides]
    return config, list(overrides)


def job_handler(args: argparse.Namespace) -> int:
    """Run `args.job` (generate | label); a bad config, dataset or output dir is one line on stderr and exit 2."""
    try:
        cfg = load_config(*config_and_overrides(args.config, args.overrides))
        summary = run_job(cfg, label=args.job == "label")
    except (ConfigError, DatasetError, SinkError, JobError) as exc:
        print(f"specray {args.job}: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 0


def main(argv: list[str] | None = None, job: str = "generate") -> int:
    """`jobs/generate.py` and `jobs/label.py`: the `ray job submit` entrypoints."""
    parser = argparse.ArgumentParser(prog=f"jobs/{job}.py", description=__doc__)
    add_generate_arguments(parser)
    parser.set_defaults(job=job)
    return job_handler(parser.parse_args(argv))
