"""What specray writes locally is as readable as a plain `open` or `mkdir` would have made it.

Some writers make private files: `tempfile.mkdtemp` makes 0700 directories and `mkstemp` 0600 files (both
are renamed into place so nothing half-written is ever seen), and safetensors writes 0600 files whatever
the umask. A registry, a draft, teacher data or the model cache written that way can be read only by the
user who wrote it, so a retrain job publishing to a shared registry would leave every other user's
generate job failing on a permission error. So each is given the mode the process's umask gives new files
(0666 less the umask) and directories (0777 less the umask) before it is put in place.
"""

from __future__ import annotations

import os
from pathlib import Path

from safetensors.torch import save_file


def umask() -> int:
    """The process's umask, read without changing it where Linux says it (os.umask sets as it reads)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def plain_mode(directory: bool, mask: int | None = None) -> int:
    """The mode a plain `mkdir` (directory) or `open` gives under `mask` (default: the process's umask)."""
    return (0o777 if directory else 0o666) & ~(umask() if mask is None else mask)


def as_if_created(path: str | Path) -> None:
    """Give `path` (a directory: with everything under it) the mode a plain create would have given it."""
    mask, path = umask(), Path(path)
    for sub in path.rglob("*") if path.is_dir() else ():
        sub.chmod(plain_mode(sub.is_dir(), mask))
    path.chmod(plain_mode(path.is_dir(), mask))


def save_safetensors(tensors: dict, path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """`safetensors.torch.save_file`, with the mode a plain create would give the file (not its 0600)."""
    save_file(tensors, str(path), metadata=metadata)
    as_if_created(path)
