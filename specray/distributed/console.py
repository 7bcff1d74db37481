"""What the job prints, by `log_level`: a clean console unless asked for more.

The rule: at `warning` (the default) the console shows the driver's progress bar, the summary and
errors, nothing else. Library warnings, model-loading progress bars and worker logs are hidden,
because a worker's FutureWarning printed on every forward or a dequantisation bar per worker buries
the one line that matters. Problems still surface: a worker's exception comes back through Ray as
an error row or a failed job, not through its log. `info` brings Ray's and the workers' logs back,
each Python warning shown once per place it is raised; `debug` shows every repeat too.

Worker settings are applied inside the worker process (before torch or transformers are imported),
driver settings only around the job, so a caller's own warning filters are left as they were.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from typing import Iterator

_LOGGING = {"warning": logging.ERROR, "info": logging.INFO, "debug": logging.DEBUG}
_WARNINGS = {"warning": "ignore", "info": "once", "debug": "always"}


def ray_init_options(log_level: str) -> dict:
    """`ray.init` keyword arguments: Ray's own driver logs and the forwarding of worker logs."""
    return {"logging_level": _LOGGING[log_level], "log_to_driver": log_level != "warning"}


@contextlib.contextmanager
def driver_console(log_level: str) -> Iterator[None]:
    """Python warnings on the driver, for the duration of the job only."""
    with warnings.catch_warnings():
        warnings.simplefilter(_WARNINGS[log_level])
        yield


def quiet_worker(log_level: str) -> None:
    """In a worker process, before the models load: warnings, library logging and loading bars."""
    warnings.simplefilter(_WARNINGS[log_level])
    if log_level != "warning":
        return
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for name in ("transformers", "torch", "accelerate", "gguf", "huggingface_hub"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:  # a worker with a test engine may not need transformers at all
        pass
