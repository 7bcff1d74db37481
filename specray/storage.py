"""Where a run's data lives: a local path or a URI (s3://, gs://, abfs://, file://, any scheme fsspec knows),
resolved to a pyarrow FileSystem and a path inside it.

pyarrow's own filesystems come first (S3, GCS, Azure, local); a scheme pyarrow lacks goes through
fsspec. Credentials are read by those libraries from the environment as they always do (AWS_* variables,
profiles, instance roles, GOOGLE_APPLICATION_CREDENTIALS, ...), never from a config file; the only store
setting a config holds is `storage.endpoint`, the address of an S3-compatible store (on-prem, or a test
server), which otherwise comes from AWS_ENDPOINT_URL like any AWS client's.

Every failure is a StorageError that names the URI and the problem (unknown scheme, no such bucket,
missing or refused credentials, unreachable endpoint), so a job can fail on it before any model loads.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs

PYARROW_SCHEMES = ("s3", "gs", "gcs", "abfs", "abfss")  # pyarrow's own remote filesystems
LOCAL_SCHEMES = ("", "file", "local")
BUCKETED = ("s3", "gs", "gcs", "abfs", "abfss")  # the first path part is a bucket (or container)
AWS_CREDENTIAL_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE",
                            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI")
MESSAGE_CHARS = 300  # a library's message is cut here: some (HDFS's JVM search) run to pages


class StorageError(ValueError):
    """A URI that cannot be used: the message names it and says why."""


@dataclass(frozen=True)
class Location:
    """A place in a filesystem: `fs` and `path` for pyarrow, `uri` for messages (what the user wrote)."""

    fs: pafs.FileSystem
    path: str
    uri: str
    scheme: str

    @property
    def is_local(self) -> bool:
        return self.scheme in LOCAL_SCHEMES

    def join(self, relative: str) -> Location:
        """The location `relative` ('results/domain=code/part-...') below this one."""
        return Location(self.fs, f"{self.path.rstrip('/')}/{relative}", f"{self.uri.rstrip('/')}/{relative}", self.scheme)

    def relative(self, path: str) -> str:
        """`path` (a filesystem path below this location) relative to it."""
        return path[len(self.path.rstrip("/")) + 1:]


def scheme_of(uri: str) -> str:
    """'s3' for 's3://b/k', '' for a plain path (a Windows drive letter is not a scheme)."""
    head, sep, _ = str(uri).partition("://")
    return head.lower() if sep and head.isidentifier() and len(head) > 1 else ""


def is_remote(uri: str | Path) -> bool:
    return scheme_of(str(uri)) not in LOCAL_SCHEMES


def local_path(uri: str) -> str:
    """The path of a local URI: '/data/x' for 'file:///data/x', a plain path as it is."""
    return uri.split("://", 1)[1] if scheme_of(uri) else uri


def uri_problem(uri: str) -> str | None:
    """Why `uri` names no filesystem this process could open (an unknown scheme), or None; no I/O."""
    scheme = scheme_of(uri)
    if scheme in LOCAL_SCHEMES or scheme in PYARROW_SCHEMES:
        return None
    from fsspec.registry import known_implementations, registry

    if scheme in known_implementations or scheme in registry:
        return None
    return (f"unknown scheme {scheme!r} in {uri!r}: expected a local path, file://, s3://, gs://, abfs:// "
            "or another scheme fsspec knows")


def resolve(uri: str | Path, endpoint: str | None = None) -> Location:
    """The filesystem and path of `uri`; `endpoint` overrides the S3 endpoint (an S3-compatible store)."""
    uri = str(uri)
    problem = uri_problem(uri)
    if problem:
        raise StorageError(problem)
    scheme = scheme_of(uri)
    if scheme in LOCAL_SCHEMES:
        return Location(pafs.LocalFileSystem(), str(Path(local_path(uri)).absolute()), uri, scheme)
    if scheme == "s3":
        check_aws_credentials(uri)
        bucket_and_key = uri.split("://", 1)[1].strip("/")
        options = {"endpoint_override": endpoint} if endpoint else {}
        try:
            fs = pafs.S3FileSystem(**options) if endpoint else pafs.FileSystem.from_uri(f"s3://{bucket_and_key.split('/')[0]}")[0]
        except (pa.ArrowException, OSError) as exc:
            raise storage_error(uri, exc) from None
        return Location(fs, bucket_and_key, uri, scheme)
    if scheme in PYARROW_SCHEMES:
        try:
            fs, path = pafs.FileSystem.from_uri(uri)
        except (pa.ArrowException, OSError) as exc:
            raise storage_error(uri, exc) from None
        return Location(fs, path.strip("/"), uri, scheme)
    return _fsspec_location(uri, scheme)


def _fsspec_location(uri: str, scheme: str) -> Location:
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(uri)
    except ImportError as exc:
        raise StorageError(f"{uri}: the {scheme}:// filesystem needs a package that is not installed ({exc})") from None
    except (ValueError, OSError) as exc:
        raise storage_error(uri, exc) from None
    return Location(pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path.rstrip("/"), uri, scheme)


def check_aws_credentials(uri: str) -> None:
    """Refuse at once when no source the AWS SDK reads holds credentials and the instance-role lookup is
    switched off: every request would go out unsigned and be refused, after retries."""
    if any(os.environ.get(name) for name in AWS_CREDENTIAL_VARIABLES):
        return
    files = [os.environ.get("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials"), os.environ.get("AWS_CONFIG_FILE", "~/.aws/config")]
    if any(Path(f).expanduser().is_file() for f in files):
        return
    if os.environ.get("AWS_EC2_METADATA_DISABLED", "").lower() == "true":
        raise StorageError(f"{uri}: no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, "
                           "or a web identity / container role in the environment (a config file never holds them)")


def check_bucket(location: Location) -> None:
    """Fail with a clear message when the bucket of a remote location does not exist or cannot be reached."""
    if location.scheme not in BUCKETED:
        return
    bucket = location.path.split("/")[0]
    try:
        info = location.fs.get_file_info(bucket)
    except (pa.ArrowException, OSError) as exc:
        raise storage_error(location.uri, exc) from None
    if info.type == pafs.FileType.NotFound:
        raise StorageError(f"{location.uri}: bucket {bucket!r} does not exist")


def storage_error(uri: str, exc: BaseException) -> StorageError:
    """A library's exception as a StorageError naming `uri` and, where it can be told, the problem."""
    text = str(exc)
    upper = text.upper()
    if "NO_SUCH_BUCKET" in upper or "NOSUCHBUCKET" in upper or "BUCKET DOES NOT EXIST" in upper:
        return StorageError(f"{uri}: the bucket does not exist")
    if any(code in upper for code in ("ACCESS_DENIED", "ACCESSDENIED", "INVALID_ACCESS_KEY_ID", "INVALIDACCESSKEYID",
                                      "SIGNATURE_DOES_NOT_MATCH", "SIGNATUREDOESNOTMATCH", "HTTP STATUS 403", "FORBIDDEN")):
        return StorageError(f"{uri}: access denied: missing or wrong credentials for this store "
                            f"(they come from the environment, e.g. AWS_ACCESS_KEY_ID / AWS_PROFILE) ({_short(text)})")
    if any(code in upper for code in ("COULDN'T CONNECT", "CONNECTION REFUSED", "NETWORK_CONNECTION", "COULD NOT CONNECT")):
        return StorageError(f"{uri}: cannot reach the store (check storage.endpoint / AWS_ENDPOINT_URL) ({_short(text)})")
    return StorageError(f"{uri}: {_short(text)}")


def _short(text: str) -> str:
    first = text.strip().splitlines()[0] if text.strip() else text
    return first if len(first) <= MESSAGE_CHARS else first[:MESSAGE_CHARS] + "..."


def read_bytes(uri: str) -> bytes | None:
    """The whole content of a small file (a pointer, an artifact), or None when there is no such file."""
    location = resolve(uri)
    try:
        if location.fs.get_file_info(location.path).type != pafs.FileType.File:
            return None
        with location.fs.open_input_stream(location.path) as f:
            return f.read()
    except (pa.ArrowException, OSError) as exc:
        raise storage_error(uri, exc) from None


def write_bytes(uri: str, data: bytes) -> None:
    """Write a small file in one piece: on an object store, one PUT (whole or absent)."""
    location = resolve(uri)
    try:
        location.fs.create_dir(location.path.rsplit("/", 1)[0], recursive=True)
        with location.fs.open_output_stream(location.path) as f:
            f.write(data)
    except (pa.ArrowException, OSError) as exc:
        raise storage_error(uri, exc) from None


def child_names(uri: str) -> list[str]:
    """Names directly under `uri` (files and directories / common prefixes); [] when there is nothing."""
    location = resolve(uri)
    try:
        infos = location.fs.get_file_info(pafs.FileSelector(location.path, allow_not_found=True))
    except (pa.ArrowException, OSError) as exc:
        raise storage_error(uri, exc) from None
    return sorted(info.base_name for info in infos)
