"""Load: 50 concurrent requests on loopback, mixing feature pages, heatmaps and image encodes, all answered."""

from __future__ import annotations

import asyncio
import io

import httpx
import pytest
from PIL import Image
from skimage import data as skdata

from visae.service.app import create_app
from visae.service.server import BackgroundServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def photo_png(seed: int) -> bytes:
    photos = (skdata.astronaut(), skdata.chelsea(), skdata.coffee())
    buffer = io.BytesIO()
    Image.fromarray(photos[seed % 3]).resize((96 + seed, 96)).save(buffer, format="PNG")
    return buffer.getvalue()


def mixed_requests(catalog) -> list[tuple[str, str, dict]]:
    """(method, path, httpx kwargs): 50 requests over every kind of work the service does."""
    ranked = catalog.get("resid").results.features.sort_values("rank").index[:10].tolist()
    image = catalog.get("resid").image_indices[0]
    requests = []
    for i in range(50):
        feature = int(ranked[i % len(ranked)])
        kind = i % 5
        if kind == 0:
            requests.append(("GET", f"/api/dictionaries/resid/features/{feature}", {}))
        elif kind == 1:
            requests.append(("GET", f"/api/dictionaries/resid/features/{feature}/top/{i % 3}.png", {}))
        elif kind == 2:
            requests.append(("GET", f"/api/dictionaries/mlp/features?sort=freq&offset={i}", {}))
        elif kind == 3:
            files = {"file": (f"photo{i}.png", photo_png(i), "image/png")}
            requests.append(("POST", "/api/dictionaries/resid/encode", {"files": files}))
        else:
            requests.append(("GET", f"/api/dictionaries/mlp/images/{image}/encode", {}))
    return requests


async def fire(base_url: str, requests) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=len(requests))
    async with httpx.AsyncClient(base_url=base_url, timeout=120, limits=limits) as client:
        return await asyncio.gather(*(client.request(method, path, **kwargs) for method, path, kwargs in requests))


def test_fifty_concurrent_mixed_requests(catalog):
    requests = mixed_requests(catalog)
    assert len(requests) == 50 and sum(m == "POST" for m, _, _ in requests) == 10
    with BackgroundServer(create_app(catalog)) as url:
        responses = asyncio.run(fire(url.rstrip("/"), requests))
    failures = [(r.request.url.path, r.status_code, r.text[:200]) for r in responses if r.status_code != 200]
    assert failures == []
    encodes = [r.json() for r in responses if r.request.url.path.endswith("encode")]
    assert len(encodes) == 20 and all(e["top_features"] for e in encodes)
    pngs = [r for r in responses if r.request.url.path.endswith(".png")]
    assert len(pngs) == 10 and all(r.content.startswith(b"\x89PNG") for r in pngs)
