"""`specray <command>`: one entry point, one subcommand per stage of the data flow."""

import argparse
import sys

from specray.analysis.report import add_report_parser
from specray.bench import add_bench_parser
from specray.distributed.cli import add_generate_parser, add_label_parser
from specray.domains.cli import add_detect_parser
from specray.training.distill import add_distill_parser
from specray.training.retrain import add_retrain_parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="specray", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_bench_parser(subparsers)
    add_detect_parser(subparsers)
    add_generate_parser(subparsers)
    add_label_parser(subparsers)
    add_report_parser(subparsers)
    add_retrain_parser(subparsers)
    add_distill_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
