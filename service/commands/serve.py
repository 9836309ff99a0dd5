"""`visae serve DICTIONARY...`: browse dictionaries and encode images in a local web UI (JSON API under /api)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Optional

from omegaconf import MISSING
from tyro.conf import Positional, arg

from visae.core.fields import bounds, check_fields
from visae.service.cli import Command
from visae.service.server import DEFAULT_HOST, DEFAULT_PORT, IDLE_TIMEOUT_S, REQUEST_TIMEOUT_S, serve
from visae.service.uploads import UploadLimits


@dataclass
class ServeOptions:
    paths: Annotated[Positional[list[str]], arg(metavar="DICTIONARY...", help_behavior_hint="(required)")] = MISSING
    """an SAE folder with eval results, a folder of them, or on the Hub RELEASE[:SAE_ID] / ORG/NAME[:SAE_ID]"""
    host: str = DEFAULT_HOST  # interface to bind; the default serves this machine only
    port: Annotated[int, bounds(ge=1, le=65535)] = DEFAULT_PORT  # TCP port to listen on
    weights: Optional[str] = None  # local model weights file the activations were harvested with (to encode images)
    max_upload_bytes: Annotated[int, bounds(ge=1)] = UploadLimits.max_bytes  # largest accepted upload, in bytes
    max_upload_pixels: Annotated[int, bounds(ge=1)] = UploadLimits.max_pixels
    """largest accepted upload, in pixels (width x height)"""
    device: str = "auto"  # torch device encoding runs on: auto (a GPU if one is visible, else cpu), cpu, cuda, cuda:N
    idle_timeout: Annotated[int, bounds(gt=0)] = IDLE_TIMEOUT_S
    """seconds an idle connection is kept open between requests"""
    request_timeout: Annotated[float, bounds(gt=0)] = REQUEST_TIMEOUT_S
    """seconds a client has to send a whole request; slower ones are cut"""

    def __post_init__(self) -> None:
        check_fields(self)


def run(options: ServeOptions) -> None:
    limits = UploadLimits(options.max_upload_bytes, options.max_upload_pixels)
    serve(options.paths, options.host, options.port, limits, options.weights, options.idle_timeout,
          options.request_timeout, device=options.device)


COMMAND = Command(
    ServeOptions, run, help="serve dictionaries and their evaluation results in a web UI",
    description="Serve evaluated SAE dictionaries: feature browser, feature pages, image encoding, JSON API.")
