"""`visae serve`: browse dictionaries and encode images in a local web UI (JSON API under /api)."""

from __future__ import annotations

import argparse

from visae.service.server import DEFAULT_HOST, DEFAULT_PORT, serve
from visae.service.uploads import UploadLimits


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve", help="serve dictionaries and their evaluation results in a web UI",
        description="Serve evaluated SAE dictionaries: feature browser, feature pages, image encoding, JSON API.")
    parser.add_argument("paths", nargs="+", metavar="DICTIONARY",
                        help="an SAE folder with eval results, a folder of them, or on the Hub "
                             "RELEASE[:SAE_ID] / ORG/NAME[:SAE_ID]")
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help=f"interface to bind (default {DEFAULT_HOST}: this machine only)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"TCP port (default {DEFAULT_PORT})")
    parser.add_argument("--weights", default=None,
                        help="local model weights file the activations were harvested with (for encoding images)")
    parser.add_argument("--max-upload-bytes", type=int, default=UploadLimits.max_bytes,
                        help="largest accepted upload in bytes")
    parser.add_argument("--max-upload-pixels", type=int, default=UploadLimits.max_pixels,
                        help="largest accepted upload in pixels (width x height)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    if not 0 < args.port < 65536:
        raise ValueError(f"--port must be in 1..65535, got {args.port}")
    if args.max_upload_bytes <= 0 or args.max_upload_pixels <= 0:
        raise ValueError("--max-upload-bytes and --max-upload-pixels must be positive")
    serve(args.paths, args.host, args.port, UploadLimits(args.max_upload_bytes, args.max_upload_pixels), args.weights)
