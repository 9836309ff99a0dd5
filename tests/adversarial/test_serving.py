"""Serving only regular files inside the dictionary folder, no server paths in the API, and no connection held open
forever by an idle or slow client."""

from __future__ import annotations

import io
import json
import os
import socket
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from hostile import SERVER_STORE, write_dictionary
from PIL import Image

from visae.service.app import create_app
from visae.service.catalog import Catalog
from visae.service.cli import main
from visae.service.server import BackgroundServer

SECRET = b"root:x:0:0:the-secret-outside-the-folder"


@pytest.fixture
def outside(tmp_path) -> Path:
    """A file outside every dictionary folder (standing in for /etc/passwd)."""
    path = tmp_path / "outside" / "passwd"
    path.parent.mkdir()
    path.write_bytes(SECRET)
    return path


def client_for(folder: Path) -> TestClient:
    return TestClient(create_app(Catalog.load([("tiny", folder)])), raise_server_exceptions=False)


def assert_refused(response, code: str) -> None:
    assert response.status_code == 404, response.text
    assert response.json()["error"]["code"] == code
    assert SECRET not in response.content and b"root:" not in response.content


def test_a_thumbnail_symlinked_out_of_the_folder_is_never_served(tmp_path, outside):
    folder = write_dictionary(tmp_path / "d")
    thumb = folder / "eval" / "thumbs" / "1.png"
    thumb.unlink()
    thumb.symlink_to(outside)
    etc = folder / "eval" / "thumbs" / "2.png"
    etc.unlink()
    etc.symlink_to("/etc/passwd")
    client = client_for(folder)
    for image in (1, 2):
        assert_refused(client.get(f"/api/dictionaries/tiny/images/{image}.png"), "unknown_image")
        assert_refused(client.get(f"/api/dictionaries/tiny/images/{image}/encode"), "unknown_image")
        assert_refused(client.get(f"/api/dictionaries/tiny/features/0/top/{image}.png"), "unknown_image")
    listed = client.get("/api/dictionaries/tiny/images").json()
    assert [entry["image"] for entry in listed["images"]] == [0]
    served = client.get("/api/dictionaries/tiny/images/0.png")  # the regular thumbnail still is
    assert served.status_code == 200 and served.content == (folder / "eval" / "thumbs" / "0.png").read_bytes()
    assert outside.read_bytes() == SECRET


def test_a_symlink_planted_after_start_is_refused_on_the_next_request(tmp_path, outside):
    folder = write_dictionary(tmp_path / "d")
    client = client_for(folder)
    assert client.get("/api/dictionaries/tiny/images/1.png").status_code == 200
    thumb = folder / "eval" / "thumbs" / "1.png"
    thumb.unlink()
    thumb.symlink_to(outside)
    assert_refused(client.get("/api/dictionaries/tiny/images/1.png"), "unknown_image")


def test_a_thumbs_folder_symlinked_elsewhere_is_refused(tmp_path):
    elsewhere = write_dictionary(tmp_path / "other") / "eval" / "thumbs"
    folder = write_dictionary(tmp_path / "d")
    thumbs = folder / "eval" / "thumbs"
    for path in thumbs.iterdir():
        path.unlink()
    thumbs.rmdir()
    thumbs.symlink_to(elsewhere)
    client = client_for(folder)
    assert_refused(client.get("/api/dictionaries/tiny/images/0.png"), "unknown_image")
    assert client.get("/api/dictionaries/tiny/images").json()["total"] == 0


def test_symlinks_that_stay_inside_the_folder_and_a_folder_named_through_a_symlink_are_served(tmp_path):
    folder = write_dictionary(tmp_path / "d")
    thumb = folder / "eval" / "thumbs" / "1.png"
    thumb.unlink()
    thumb.symlink_to(folder / "eval" / "thumbs" / "0.png")
    alias = tmp_path / "alias"
    alias.symlink_to(folder, target_is_directory=True)
    client = client_for(alias)
    assert client.get("/api/dictionaries/tiny/images/1.png").content == (folder / "eval/thumbs/0.png").read_bytes()


def test_a_fifo_thumbnail_is_not_opened(tmp_path):
    folder = write_dictionary(tmp_path / "d")
    thumb = folder / "eval" / "thumbs" / "1.png"
    thumb.unlink()
    os.mkfifo(thumb)  # opening it for reading would block the worker forever
    assert_refused(client_for(folder).get("/api/dictionaries/tiny/images/1.png"), "unknown_image")


# -- no server paths ---------------------------------------------------------------------------------------------
def test_the_api_shows_the_store_by_name_never_a_server_path(tmp_path):
    folder = write_dictionary(tmp_path / "d")
    client = client_for(folder)
    details = client.get("/api/dictionaries/tiny").json()
    assert details["store"] == Path(SERVER_STORE).name == "secret-store.zarr"
    assert details["name"] == "d" and details["model"] == "timm:vit_tiny_patch16_224,pretrained=false"
    for url in ("/api/dictionaries", "/api/dictionaries/tiny", "/api/dictionaries/tiny/features",
                "/api/dictionaries/tiny/features/0", "/api/dictionaries/tiny/images"):
        text = client.get(url).text
        assert "/srv/private" not in text and str(tmp_path) not in text, url
        assert not any(isinstance(v, str) and v.startswith("/") and not v.startswith(("/api/", "/d/"))
                       for v in _strings(json.loads(text))), url


def _strings(value):
    if isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, str):
        yield value


def test_the_web_ui_reads_no_path_field():
    """The pages never needed the store's path: app.js reads neither `store` nor `path` of a dictionary."""
    script = (Path(__file__).resolve().parents[2] / "service" / "web" / "static" / "app.js").read_text()
    assert "info.store" not in script and ".path" not in script.replace("location.pathname", "")


# -- slow and idle connections -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def short_timeouts(tmp_path_factory):
    folder = write_dictionary(tmp_path_factory.mktemp("served") / "d")
    app = create_app(Catalog.load([("tiny", folder)]))
    with BackgroundServer(app, idle_timeout=1, request_timeout=1.5) as url:
        host, port = url.removeprefix("http://").rstrip("/").rsplit(":", 1)
        yield host, int(port)


def closed_within(sock: socket.socket, seconds: float, trickle: bytes = b"") -> float:
    """Seconds until the server closes `sock` (sending `trickle` a byte every 0.2 s meanwhile); fails past `seconds`."""
    start = time.monotonic()
    sock.settimeout(0.2)
    while time.monotonic() - start < seconds:
        if trickle:
            try:
                sock.sendall(trickle[:1])
            except OSError:
                return time.monotonic() - start
            trickle = trickle[1:] or b"x"
        try:
            if sock.recv(65536) == b"":
                return time.monotonic() - start
        except TimeoutError:
            continue
        except OSError:
            return time.monotonic() - start
    raise AssertionError(f"the server kept the connection open for {seconds} s")


def test_a_connection_that_sends_nothing_is_closed(short_timeouts):
    with socket.create_connection(short_timeouts) as sock:
        assert closed_within(sock, 10) < 5


def test_a_request_sent_a_byte_at_a_time_is_cut_off(short_timeouts):
    with socket.create_connection(short_timeouts) as sock:
        assert closed_within(sock, 10, trickle=b"GET /api/dictionaries HTTP/1.1\r\nHost: x\r\nX-Slow: ") < 5


def test_an_idle_keep_alive_connection_is_closed_after_a_response(short_timeouts):
    with socket.create_connection(short_timeouts) as sock:
        sock.sendall(b"GET /api/dictionaries HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.settimeout(5)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        assert closed_within(sock, 10) < 5


def test_a_normal_request_is_served_whole(short_timeouts):
    with socket.create_connection(short_timeouts) as sock:
        sock.sendall(b"GET /api/dictionaries/tiny/images/0.png HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        sock.settimeout(5)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    Image.open(io.BytesIO(body)).verify()


def test_the_timeouts_are_set_and_stated_in_the_serve_help(capsys, monkeypatch):
    from visae.service.server import IDLE_TIMEOUT_S, REQUEST_TIMEOUT_S, uvicorn_config

    config = uvicorn_config(None, "127.0.0.1", 0)
    assert config.timeout_keep_alive == IDLE_TIMEOUT_S == 5 and REQUEST_TIMEOUT_S == 30
    monkeypatch.setenv("COLUMNS", "250")
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    help_text = capsys.readouterr().out
    assert "--idle-timeout" in help_text and "--request-timeout" in help_text
    assert "(default: 5; > 0)" in help_text and "(default: 30.0; > 0)" in help_text
