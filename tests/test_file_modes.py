"""What specray writes is as readable as a plain create would make it, though tempfile and safetensors make
private files: a registry one user publishes must be readable by the others' jobs."""

import os
import stat
import tempfile
from pathlib import Path

import pytest
import torch

from specray.file_modes import as_if_created, umask
from specray.policies.registry import latest_version, publish


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(params=[0o022, 0o027])
def process_umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def test_umask_is_read_without_changing_it(process_umask):
    assert umask() == process_umask
    assert umask() == process_umask


def test_a_published_registry_version_has_the_umasks_modes(tmp_path, process_umask):
    version = publish(tmp_path, "disco", {"global": ({"w": torch.ones(2)}, {"kind": "disco"})})
    directory = tmp_path / "disco" / latest_version(tmp_path, "disco")
    assert version == directory.name and mode(directory) == 0o777 & ~process_umask
    files = sorted(directory.iterdir())
    assert [p.name for p in files] == ["global.json", "global.safetensors"]
    assert all(mode(p) == 0o666 & ~process_umask for p in files)  # safetensors alone would be 0600


def test_private_temporary_files_and_trees_are_opened_up(tmp_path, process_umask):
    tree = Path(tempfile.mkdtemp(dir=tmp_path))
    (tree / "inner").mkdir(mode=0o700)
    fd, name = tempfile.mkstemp(dir=tree / "inner")
    os.close(fd)
    as_if_created(tree)
    assert mode(tree) == mode(tree / "inner") == 0o777 & ~process_umask
    assert mode(Path(name)) == 0o666 & ~process_umask
