"""Latency of the dictionary service under concurrent load on loopback; prints one JSON object.

    python bench/serve.py [SAE_DIR ...] [--weights FILE] [--requests 200] [--concurrency 16]

Without SAE_DIR it first builds the test suite's small dictionaries (tiny random-init ViT on `shapes` images,
harvest -> train -> eval). Each request kind's latency percentiles are reported, and as ratios to the static-file
baseline measured in the same run; `cached_vs_cold` compares a feature page's repeat hits with its first hit."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import io
import json
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image
from skimage import data as skdata

from visae.service.server import BackgroundServer, build_app


def percentiles(seconds: list[float]) -> dict:
    ms = np.asarray(seconds) * 1000
    return {"n": len(ms), "p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p90_ms": round(float(np.percentile(ms, 90)), 2), "p99_ms": round(float(np.percentile(ms, 99)), 2),
            "max_ms": round(float(ms.max()), 2)}


def photo_png(i: int) -> bytes:
    photos = (skdata.astronaut(), skdata.chelsea(), skdata.coffee())
    buffer = io.BytesIO()
    Image.fromarray(photos[i % 3]).resize((160 + i % 7, 160)).save(buffer, format="PNG")
    return buffer.getvalue()


def request_mix(catalog, n: int) -> list[tuple[str, str, str, dict]]:
    """(kind, method, path, kwargs), cycling over the kinds of work the service does."""
    dictionary = next(iter(catalog))
    features = dictionary.results.features.sort_values("rank").index.tolist()
    images = dictionary.image_indices
    base = f"/api/dictionaries/{dictionary.id}"
    kinds = [
        ("static", lambda i: ("GET", "/static/style.css", {})),
        ("feature_list", lambda i: ("GET", f"{base}/features?sort=score&offset={i % 50}", {})),
        ("feature_json", lambda i: ("GET", f"{base}/features/{features[i % len(features)]}", {})),
        ("heatmap_png", lambda i: ("GET", f"{base}/features/{features[i % 40]}/top/{i % 4}.png", {})),
        ("feature_page_html", lambda i: ("GET", f"/d/{dictionary.id}/features/{features[i % 40]}", {})),
        ("encode_upload", lambda i: ("POST", f"{base}/encode",
                                     {"files": {"file": ("p.png", photo_png(i), "image/png")}})),
        ("encode_store", lambda i: ("GET", f"{base}/images/{images[i % len(images)]}/encode", {})),
    ]
    return [(name, *make(i)) for i in range(n) for name, make in [kinds[i % len(kinds)]]]


async def timed(client, semaphore, kind, method, path, kwargs, out):
    async with semaphore:
        start = time.perf_counter()
        response = await client.request(method, path, **kwargs)
        out.append((kind, time.perf_counter() - start, response.status_code))


async def run_load(url: str, mix: list[tuple[str, str, str, dict]], concurrency: int) -> tuple[list, float]:
    out: list = []
    semaphore = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=httpx.Limits(max_connections=concurrency)) as client:
        start = time.perf_counter()
        await asyncio.gather(*(timed(client, semaphore, *item, out) for item in mix))
        return out, time.perf_counter() - start


def cold_vs_cached(url: str, catalog) -> dict:
    """First hit of a feature's JSON (renders and caches) against repeat hits (served from the cache)."""
    dictionary = next(iter(catalog))
    feature = int(dictionary.results.features.sort_values("rank").index[-1])
    path = f"/api/dictionaries/{dictionary.id}/features/{feature}"
    with httpx.Client(base_url=url) as client:
        start = time.perf_counter()
        client.get(path).raise_for_status()
        cold = time.perf_counter() - start
        repeats = []
        for _ in range(20):
            start = time.perf_counter()
            client.get(path).raise_for_status()
            repeats.append(time.perf_counter() - start)
    return {"cold_ms": round(cold * 1000, 2), "cached_p50_ms": round(float(np.median(repeats)) * 1000, 2),
            "cached_vs_cold": round(float(np.median(repeats)) / cold, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dictionaries", nargs="*", help="evaluated SAE folders (default: build the test dictionaries)")
    parser.add_argument("--weights", default=None, help="local model weights file, as for `visae serve --weights`")
    parser.add_argument("--requests", type=int, default=210)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    paths, weights = args.dictionaries, args.weights
    if not paths:
        build_dictionaries = _test_dictionary_builder()

        with contextlib.redirect_stdout(sys.stderr):  # stdout carries only the figures
            built = build_dictionaries(Path(tempfile.mkdtemp(prefix="visae-bench-serve-")))
        paths, weights = [str(built.resid)], str(built.weights)
    app = build_app(paths, weights=weights)
    catalog = app.state.catalog
    with BackgroundServer(app) as url:
        warm = asyncio.run(run_load(url, request_mix(catalog, 14), 2))[0]  # loads the model, fills first caches
        results, wall = asyncio.run(run_load(url, request_mix(catalog, args.requests), args.concurrency))
        cache = cold_vs_cached(url, catalog)
    names = dict.fromkeys(kind for kind, _, _ in results)
    kinds = {name: percentiles([s for kind, s, _ in results if kind == name]) for name in names}
    static_p50 = kinds["static"]["p50_ms"]
    print(json.dumps({
        "requests": len(results), "concurrency": args.concurrency,
        "errors": sum(code != 200 for _, _, code in results) + sum(code != 200 for _, _, code in warm),
        "throughput_rps": round(len(results) / wall, 2),
        "all": percentiles([s for _, s, _ in results]),
        "kinds": kinds,
        "p50_vs_static": {kind: round(v["p50_ms"] / static_p50, 2) for kind, v in kinds.items()},
        "feature_json_cache": cache,
    }, indent=2))


if __name__ == "__main__":
    main()


def _test_dictionary_builder():
    """tests/service_dictionary.py's `build_dictionaries`, loaded from its file (bench/ runs from a checkout)."""
    path = Path(__file__).resolve().parents[1] / "tests" / "service_dictionary.py"
    spec = importlib.util.spec_from_file_location("service_dictionary", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build_dictionaries
