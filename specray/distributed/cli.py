"""`specray generate|label [CONFIG.yaml] [key=value ...]` and `python jobs/{generate,label}.py ...`: the
same arguments, one job.

With no arguments: the embedded pair, a local Ray instance, the 8 short built-in prompts of the `quick`
set (`data.builtin=demo` for the 40-prompt demo), output under ./runs/<run_id>/. Ends with a short
summary on stdout (`--json`: the full summary as JSON instead; `jobs/*.py` print both, for job logs);
the progress bar goes to stderr. `--verbose` is `log_level=info`: Ray's and the workers' logs and
warnings, hidden by default. Ctrl-C commits what finished and prints one line: how many prompts are
done and the exact command that resumes (exit status 130). `label` is the labelling run: every domain
drafts `label.depth` tokens a round and traces keep the draft's hidden states (`source=label`), for
`specray retrain`.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from specray.config import ConfigError, load_config
from specray.data.readers import DatasetError
from specray.distributed.job import JobError, JobInterrupted, run_job
from specray.distributed.sink import SinkError
from specray.distributed.summary import format_summary

COMMANDS = {
    "generate": "run the generation job on Ray",
    "label": "run a labelling job on Ray: fixed-depth drafts, traces with hidden states, for retrain",
}


def add_generate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", nargs="?", help="YAML config (configs/default.yaml lists every key); may be omitted")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. generation.max_new_tokens=64")
    parser.add_argument("--verbose", action="store_true", help="show Ray's and the workers' logs and warnings (log_level=info)")
    parser.add_argument("--json", action="store_true", help="print the full summary as JSON instead of the short one")


def add_generate_parser(subparsers) -> argparse.ArgumentParser:
    """Register `generate` on an argparse subparsers object; the handler is stored as `handler`."""
    return _add_job_parser(subparsers, "generate")


def add_label_parser(subparsers) -> argparse.ArgumentParser:
    """Register `label`: the same arguments and job as `generate`, run as a labelling run."""
    return _add_job_parser(subparsers, "label")


def _add_job_parser(subparsers, command: str) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(command, help=COMMANDS[command], description=__doc__)
    add_generate_arguments(parser)
    parser.set_defaults(handler=job_handler, job=command, prog=f"specray {command}", both=False)
    return parser


def config_and_overrides(config: str | None, overrides: list[str]) -> tuple[str | None, list[str]]:
    """argparse puts a first `key=value` into `config`; move it back unless a file by that name exists."""
    if config is not None and "=" in config and not Path(config).is_file():
        return None, [config, *overrides]
    return config, list(overrides)


def job_handler(args: argparse.Namespace) -> int:
    """Run `args.job` (generate | label); a bad config, dataset or output dir is one line on stderr and exit 2;
    Ctrl-C is one line with the resume command and exit 130."""
    config, overrides = config_and_overrides(args.config, args.overrides)
    if getattr(args, "verbose", False) and not any(o.startswith("log_level=") for o in overrides):
        overrides.append("log_level=info")
    try:
        cfg = load_config(config, overrides)
        summary = run_job(cfg, label=args.job == "label")
    except (ConfigError, DatasetError, SinkError, JobError) as exc:
        print(f"specray {args.job}: {exc}", file=sys.stderr)
        return 2
    except JobInterrupted as stop:
        resume = resume_command(args.prog, config, overrides, stop.run_id)
        print(f"\nspecray {args.job}: stopped; {stop.done} of {stop.total} prompts done and committed in "
              f"{stop.output_dir}. Resume with: {resume}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:  # before the run existed: nothing to resume
        print(f"\nspecray {args.job}: stopped before any prompt ran", file=sys.stderr)
        return 130
    if args.json or args.both:
        print(json.dumps(summary, indent=2))
    if not args.json:
        print(format_summary(summary, args.job), flush=True)
    return 0


def resume_command(prog: str, config: str | None, overrides: list[str], run_id: str) -> str:
    """The command line that continues run `run_id`: the same arguments with `run_id=` set to it."""
    kept = [o for o in overrides if not o.startswith("run_id=")]
    return " ".join([prog, *map(shlex.quote, [*([config] if config else []), *kept, f"run_id={run_id}"])])


def main(argv: list[str] | None = None, job: str = "generate") -> int:
    """`jobs/generate.py` and `jobs/label.py`: the `ray job submit` entrypoints."""
    parser = argparse.ArgumentParser(prog=f"jobs/{job}.py", description=__doc__)
    add_generate_arguments(parser)
    parser.set_defaults(job=job, prog=f"python jobs/{job}.py", both=True)
    return job_handler(parser.parse_args(argv))
