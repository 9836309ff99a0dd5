"""`serve(paths, host, port)`: run the dictionary service with uvicorn (used by `visae serve` and the quickstart)."""

from __future__ import annotations

import ipaddress
import threading
import time
from pathlib import Path

import uvicorn

from visae.service.app import create_app
from visae.service.catalog import Catalog
from visae.service.locate import locate
from visae.service.uploads import UploadLimits

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8321


def build_app(paths: list[str], limits: UploadLimits = UploadLimits(), weights: str | None = None):
    """The app serving every evaluated dictionary that `paths` name (folders, hub releases, org/name repos).
    `weights` is the local model weights file the dictionaries' activations were harvested with, if any."""
    if not paths:
        raise ValueError("name at least one dictionary: an SAE folder, a folder of them, or a hub release/repo id")
    located = [pair for spec in paths for pair in locate(spec)]
    return create_app(Catalog.load(located, weights), limits)


def url_for(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else ("localhost" if host == "::" else host)
    return f"http://[{shown}]:{port}/" if ":" in shown else f"http://{shown}:{port}/"


def serve(paths: list[str], host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
          limits: UploadLimits = UploadLimits(), weights: str | None = None) -> None:
    """Serve until interrupted. Binds loopback unless another `host` is asked for explicitly."""
    if weights is not None and not Path(weights).is_file():
        raise FileNotFoundError(f"--weights {weights} does not exist; pass the file `visae harvest --weights` used")
    app = build_app(paths, limits, weights)
    if not _is_loopback(host):
        print(f"visae serve: warning: listening on {host}, reachable from other machines", flush=True)
    print(f"visae serve: {len(app.state.catalog)} dictionar{'y' if len(app.state.catalog) == 1 else 'ies'} "
          f"at {url_for(host, port)}", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class BackgroundServer:
    """Serve an app from a thread (notebooks, tests, benchmarks): `with BackgroundServer(app) as url: ...`.

    Port 0 picks a free port; `url` is the address actually bound."""

    def __init__(self, app, host: str = DEFAULT_HOST, port: int = 0):
        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, name="visae-serve", daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("the server stopped while starting; see the log above")
            time.sleep(0.02)
        host, port = self.server.servers[0].sockets[0].getsockname()[:2]
        return url_for(host, port)

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
