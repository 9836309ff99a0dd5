"""Request-body limit, enforced before a multipart upload is parsed or spooled to disk."""

from __future__ import annotations

import json


class BodySizeLimit:
    """ASGI middleware: refuse bodies larger than `max_bytes` (413) and bodies of unknown length (411)."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        if length is None:
            if headers.get(b"transfer-encoding"):
                return await _refuse(send, 411, "length_required", "send the upload with a Content-Length header")
            return await self.app(scope, receive, send)
        if not length.isdigit():
            return await _refuse(send, 400, "bad_request", "invalid Content-Length header")
        if int(length) > self.max_bytes:
            return await _refuse(send, 413, "too_large",
                                 f"request body is {int(length)} bytes; the limit is {self.max_bytes} bytes")
        return await self.app(scope, receive, send)


async def _refuse(send, status: int, code: str, message: str) -> None:
    body = json.dumps({"error": {"status": status, "code": code, "message": message}}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
