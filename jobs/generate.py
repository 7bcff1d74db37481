"""The generation job as a `ray job submit` entrypoint; the same arguments as `specray generate`.

    ray job submit --working-dir . -- python jobs/generate.py configs/default.yaml cluster.num_workers=4
"""

import sys

from specray.distributed.cli import main

if __name__ == "__main__":
    sys.exit(main())
