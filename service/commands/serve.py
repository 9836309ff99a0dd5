"""`visae serve DICTIONARY...`: browse dictionaries and encode images in a local web UI (JSON API under /api)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Optional

from omegaconf import MISSING
from tyro.conf import Positional, arg

from visae.service.cli import Command
from visae.service.server import DEFAULT_HOST, DEFAULT_PORT, IDLE_TIMEOUT_S, REQUEST_TIMEOUT_S, serve
from visae.service.uploads import UploadLimits


@dataclass
class ServeOptions:
    paths: Annotated[Positional[list[str]], arg(metavar="DICTIONARY...", help_behavior_hint="(required)")] = MISSING
    """an SAE folder with eval results, a folder of them, or on the Hub RELEASE[:SAE_ID] / ORG/NAME[:SAE_ID]"""
    host: str = DEFAULT_HOST  # interface to bind; the default serves this machine only
    port: int = DEFAULT_PORT  # TCP port to listen on
    weights: Optional[str] = None  # local model weights file the activations were harvested with (to encode images)
    max_upload_bytes: int = UploadLimits.max_bytes  # largest accepted upload, in bytes
    max_upload_pixels: int = UploadLimits.max_pixels  # largest accepted upload, in pixels (width x height)
    device: str = "auto"  # torch device encoding runs on: auto (a GPU if one is visible, else cpu), cpu, cuda, cuda:N
    idle_timeout: int = IDLE_TIMEOUT_S  # seconds an idle connection is kept open between requests
    request_timeout: float = REQUEST_TIMEOUT_S  # seconds a client has to send a whole request; slower ones are cut

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ValueError(f"--port must be in 1..65535, got {self.port}")
        if self.max_upload_bytes <= 0 or self.max_upload_pixels <= 0:
            raise ValueError("--max-upload-bytes and --max-upload-pixels must be positive")
        if self.idle_timeout <= 0 or not self.request_timeout > 0:
            raise ValueError("--idle-timeout and --request-timeout must be positive")


def run(options: ServeOptions) -> None:
    limits = UploadLimits(options.max_upload_bytes, options.max_upload_pixels)
    serve(options.paths, options.host, options.port, limits, options.weights, options.idle_timeout,
          options.request_timeout, device=options.device)


COMMAND = Command(
    ServeOptions, run, help="serve dictionaries and their evaluation results in a web UI",
    description="Serve evaluated SAE dictionaries: feature browser, feature pages, image encoding, JSON API.")
