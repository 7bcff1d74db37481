"""A real S3-compatible HTTP server on 127.0.0.1 for the object-store tests: moto's standalone server.

Why moto: it is pure Python from PyPI (the dev extra installs `moto[server]`), needs no binary, no
container and no network, and speaks the S3 REST API over HTTP, so specray reaches it through the very
client a cloud user's run takes (pyarrow's S3FileSystem, credentials from AWS_* variables, the endpoint
from `storage.endpoint` or AWS_ENDPOINT_URL); nothing in specray is patched. MinIO would be closer to a
production store but is a downloaded binary, which an offline machine cannot fetch.

`S3Server.start` waits for the server to answer (STARTUP_S at most); `stop` shuts it down.
"""

from __future__ import annotations

import logging
import socket
import time
import uuid
from contextlib import contextmanager

import pyarrow.fs as pafs

STARTUP_S = 30.0
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "specray-test", "AWS_SECRET_ACCESS_KEY": "specray-test-secret",
               "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}


class S3Server:
    """moto's ThreadedMotoServer on a free port of 127.0.0.1."""

    def __init__(self):
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.endpoint = ""

    def start(self) -> S3Server:
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        deadline = time.monotonic() + STARTUP_S
        while True:
            try:
                socket.create_connection((host, port), timeout=1).close()
                return self
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"the S3 test server did not answer on {self.endpoint} within {STARTUP_S:.0f} s")
                time.sleep(0.05)

    def stop(self) -> None:
        self._server.stop()

    def filesystem(self) -> pafs.S3FileSystem:
        return pafs.S3FileSystem(endpoint_override=self.endpoint, access_key=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                                 secret_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"], region="us-east-1",
                                 allow_bucket_creation=True)

    def new_bucket(self) -> str:
        """A fresh, empty bucket; its name."""
        name = f"specray-{uuid.uuid4().hex[:12]}"
        self.filesystem().create_dir(name)
        return name


@contextmanager
def moto_auth():
    """The server checks signatures and keys (as a real store does) while this is open; off by default."""
    import moto.settings

    before = moto.settings.INITIAL_NO_AUTH_ACTION_COUNT
    moto.settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
    try:
        yield
    finally:
        moto.settings.INITIAL_NO_AUTH_ACTION_COUNT = before
