"""`specray generate [CONFIG.yaml] [key=value ...]` and `python jobs/generate.py ...`: the same arguments, one job.

With no arguments: the embedded pair, a local Ray instance, the built-in demo prompts, output under
./runs/<run_id>/. Prints the job summary as JSON on stdout; progress goes to stderr.
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


def add_generate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", nargs="?", help="YAML config (configs/default.yaml lists every key); may be omitted")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. generation.max_new_tokens=64")


def add_generate_parser(subparsers) -> argparse.ArgumentParser:
    """Register `generate` on an argparse subparsers object; the handler is stored as `handler`."""
    parser = subparsers.add_parser("generate", help="run the generation job on Ray", description=__doc__)
    add_generate_arguments(parser)
    parser.set_defaults(handler=generate_handler)
    return parser


def config_and_overrides(config: str | None, overrides: list[str]) -> tuple[str | None, list[str]]:
    """argparse puts a first `key=value` into `config`; move it back unless a file by that name exists."""
    if config is not None and "=" in config and not Path(config).is_file():
        return None, [config, *overrides]
    return config, list(overrides)


def generate_handler(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(*config_and_overrides(args.config, args.overrides))
        summary = run_job(cfg)
    except (ConfigError, DatasetError, SinkError, JobError) as exc:
        print(f"specray generate: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    """`jobs/generate.py`: the `ray job submit` entrypoint."""
    parser = argparse.ArgumentParser(prog="jobs/generate.py", description=__doc__)
    add_generate_arguments(parser)
    return generate_handler(parser.parse_args(argv))
