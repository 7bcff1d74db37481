"""Ray job entrypoint for retraining: `ray job submit -- python jobs/retrain.py --traces ... --out ...`.

Same arguments as `specray retrain`; runs on the driver (CPU is enough), so a scheduled job with
`--if-new-traces N` costs a directory listing and Parquet footers when there is nothing new.
"""

import sys

from specray.training.retrain import main

if __name__ == "__main__":
    sys.exit(main())
