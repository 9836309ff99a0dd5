"""`serve(paths, host, port)`: run the dictionary service with uvicorn (used by `visae serve` and the quickstart)."""

from __future__ import annotations

import asyncio
import ipaddress
import threading
import time
from pathlib import Path

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from visae.core.devices import resolve_device
from visae.service.app import create_app
from visae.service.catalog import Catalog
from visae.service.locate import locate
from visae.service.uploads import UploadLimits

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8321
IDLE_TIMEOUT_S = 5  # an idle keep-alive connection is closed after this many seconds (uvicorn's timeout_keep_alive)
REQUEST_TIMEOUT_S = 30.0  # a client must send a whole request (head and body) within this many seconds


def build_app(paths: list[str], limits: UploadLimits = UploadLimits(), weights: str | None = None,
              device: str = "cpu"):
    """The app serving every evaluated dictionary that `paths` name (folders, hub releases, org/name repos).
    `weights` is the local model weights file the dictionaries' activations were harvested with, if any;
    `device` is where uploaded images are encoded (a torch device name, or `auto`)."""
    device = str(resolve_device(device))  # a bad name is refused before anything is downloaded or loaded
    if not paths:
        raise ValueError("name at least one dictionary: an SAE folder, a folder of them, or a hub release/repo id")
    located = [pair for spec in paths for pair in locate(spec)]
    return create_app(Catalog.load(located, weights, device), limits)


def url_for(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else ("localhost" if host == "::" else host)
    return f"http://[{shown}]:{port}/" if ":" in shown else f"http://{shown}:{port}/"


class _RequestDeadline(H11Protocol):
    """uvicorn's h11 protocol with a deadline on reading each request. uvicorn alone closes a connection idle
    between requests (`timeout_keep_alive`) but waits forever for one that connects and sends nothing, or sends its
    request a byte a minute: here, from the connection's start and from the end of each response, the client has
    `request_timeout` seconds to send a whole request (head and body), or the connection is closed."""

    request_timeout: float = REQUEST_TIMEOUT_S
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        super().connection_lost(exc)

    def _arm_deadline(self) -> None:
        self._cancel_deadline()
        if not self.transport.is_closing():
            self._deadline = self.loop.call_later(self.request_timeout, self._deadline_passed)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _deadline_passed(self) -> None:
        self._deadline = None
        if self.conn.their_state in (h11.IDLE, h11.SEND_BODY) and not self.transport.is_closing():
            self.transport.close()  # the request is not in yet: a slow or idle client


def uvicorn_config(app, host: str, port: int, idle_timeout: int = IDLE_TIMEOUT_S,
                   request_timeout: float = REQUEST_TIMEOUT_S) -> uvicorn.Config:
    """The server settings of `visae serve`: idle connections close after `idle_timeout` seconds, and a request
    not fully received `request_timeout` seconds after the connection opened (or the last response) closes its
    connection."""

    class Protocol(_RequestDeadline):
        pass

    Protocol.request_timeout = request_timeout
    return uvicorn.Config(app, host=host, port=port, log_level="warning", http=Protocol,
                          timeout_keep_alive=idle_timeout)


def serve(paths: list[str], host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
          limits: UploadLimits = UploadLimits(), weights: str | None = None, idle_timeout: int = IDLE_TIMEOUT_S,
          request_timeout: float = REQUEST_TIMEOUT_S, device: str = "auto") -> None:
    """Serve until interrupted. Binds loopback unless another `host` is asked for explicitly. Images are encoded
    on `device` (`auto`: a GPU if one is visible, else the CPU)."""
    if weights is not None and not Path(weights).is_file():
        raise FileNotFoundError(f"--weights {weights} does not exist; pass the file `visae harvest --weights` used")
    app = build_app(paths, limits, weights, device)
    if not _is_loopback(host):
        print(f"visae serve: warning: listening on {host}, reachable from other machines", flush=True)
    print(f"visae serve: {len(app.state.catalog)} dictionar{'y' if len(app.state.catalog) == 1 else 'ies'} "
          f"at {url_for(host, port)}", flush=True)
    uvicorn.Server(uvicorn_config(app, host, port, idle_timeout, request_timeout)).run()


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class BackgroundServer:
    """Serve an app from a thread (notebooks, tests, benchmarks): `with BackgroundServer(app) as url: ...`.

    Port 0 picks a free port; `url` is the address actually bound."""

    def __init__(self, app, host: str = DEFAULT_HOST, port: int = 0, idle_timeout: int = IDLE_TIMEOUT_S,
                 request_timeout: float = REQUEST_TIMEOUT_S):
        self.server = uvicorn.Server(uvicorn_config(app, host, port, idle_timeout, request_timeout))
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
