"""The labelling run as a `ray job submit` entrypoint; the same arguments as `specray label`.

    ray job submit --working-dir . -- python jobs/label.py configs/default.yaml data.path=prompts.jsonl label.depth=8
"""

import sys

from specray.distributed.cli import main

if __name__ == "__main__":
    sys.exit(main(job="label"))
