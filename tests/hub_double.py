"""A stand-in Hugging Face Hub server for tests: a TEST DOUBLE, not the Hub.

It keeps model repos in memory and implements just the endpoints that huggingface_hub's real client
uses for `create_repo`, `upload_folder` (preupload, the git-LFS batch API with basic PUT transfers,
and the NDJSON commit), `repo_info`/`model_info`, `list_repo_tree`, `hf_hub_download` and
`snapshot_download`. Point the client at it with HF_ENDPOINT (set before huggingface_hub is
imported) and HF_HUB_DISABLE_XET=1. It records the Authorization headers it sees so tests can check
that a token was sent, and it lets tests corrupt or delete stored files.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

import yaml

LFS_SUFFIXES = (".safetensors", ".pt", ".bin")


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class StoredFile:
    data: bytes
    lfs: bool


@dataclass
class Repo:
    commits: list[tuple[str, dict[str, StoredFile]]] = field(default_factory=list)

    def snapshot(self, revision: str) -> tuple[str, dict[str, StoredFile]] | None:
        if not self.commits:
            return None
        if revision == "main":
            return self.commits[-1]
        return next((c for c in self.commits if c[0] == revision), None)


class HubDouble:
    """Start with `HubDouble().start()`; `url` is the HF_ENDPOINT; `stop()` shuts it down."""

    def __init__(self):
        self.repos: dict[str, Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}
        self.auth_headers: list[str] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> HubDouble:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # ---- test helpers ---------------------------------------------------------------------------

    def files(self, repo_id: str) -> dict[str, bytes]:
        return {path: f.data for path, f in self.repos[repo_id].commits[-1][1].items()}

    def add_repo(self, repo_id: str, files: dict[str, bytes]) -> None:
        """Create a repo with one commit holding `files` (as someone else's upload would)."""
        stored = {p: StoredFile(d, lfs=p.endswith(LFS_SUFFIXES)) for p, d in files.items()}
        with self.lock:
            self.repos[repo_id] = Repo([(self._commit_sha(repo_id, stored, 0), stored)])

    def copy_repo(self, source: str, target: str) -> None:
        with self.lock:
            self.repos[target] = Repo(list(self.repos[source].commits))

    def rewrite(self, repo_id: str, path: str, data: bytes | None) -> None:
        """Replace (or with None delete) one file in a new commit, as a broken or partial upload would."""
        with self.lock:
            repo = self.repos[repo_id]
            files = dict(repo.commits[-1][1])
            if data is None:
                files.pop(path)
            else:
                files[path] = StoredFile(data, files[path].lfs)
            repo.commits.append((self._commit_sha(repo_id, files, len(repo.commits)), files))

    @staticmethod
    def _commit_sha(repo_id: str, files: dict[str, StoredFile], n_before: int) -> str:
        digest = hashlib.sha1(f"{repo_id}@{n_before}".encode())
        for path in sorted(files):
            digest.update(path.encode() + git_blob_sha1(files[path].data).encode())
        return digest.hexdigest()

    # ---- HTTP --------------------------------------------------------------------------------------

    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output clean
                pass

            def _send(self, status: int, body: bytes = b"", headers: dict | None = None, head: bool = False):
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not head:
                    self.wfile.write(body)

            def _json(self, status: int, obj, headers: dict | None = None):
                self._send(status, json.dumps(obj).encode(), {"Content-Type": "application/json", **(headers or {})})

            def _error(self, status: int, code: str, message: str, headers: dict | None = None, head=False):
                self._send(status, json.dumps({"error": message}).encode(),
                           {"Content-Type": "application/json", "X-Error-Code": code,
                            "X-Error-Message": message, **(headers or {})}, head=head)

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _record_auth(self):
                if self.headers.get("Authorization"):
                    with hub.lock:
                        hub.auth_headers.append(self.headers["Authorization"])

            def do_HEAD(self):
                self._dispatch("HEAD")

            def do_GET(self):
                self._dispatch("GET")

            def do_POST(self):
                self._dispatch("POST")

            def do_PUT(self):
                self._dispatch("PUT")

            def _dispatch(self, method: str):
                self._record_auth()
                path = unquote(urlparse(self.path).path)
                routes = [
                    ("POST", r"^/api/repos/create$", self.create_repo),
                    ("POST", r"^/api/validate-yaml$", self.validate_yaml),
                    ("GET", r"^/api/models/(?P<repo>[^/]+/[^/]+)(?:/revision/(?P<rev>[^/]+))?$", self.repo_info),
                    ("GET", r"^/api/models/(?P<repo>[^/]+/[^/]+)/tree/(?P<rev>[^/]+)(?:/(?P<sub>.*))?$", self.tree),
                    ("POST", r"^/api/models/(?P<repo>[^/]+/[^/]+)/preupload/(?P<rev>[^/]+)$", self.preupload),
                    ("POST", r"^/(?P<repo>[^/]+/[^/]+)\.git/info/lfs/objects/batch$", self.lfs_batch),
                    ("PUT", r"^/lfs-upload/(?P<oid>[0-9a-f]{64})$", self.lfs_put),
                    ("POST", r"^/api/models/(?P<repo>[^/]+/[^/]+)/commit/(?P<rev>[^/]+)$", self.commit),
                    ("GET", r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$", self.resolve),
                    ("HEAD", r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$", self.resolve),
                ]
                for verb, pattern, handler in routes:
                    m = re.match(pattern, path)
                    if verb == method and m:
                        return handler(method=method, **{k: v for k, v in m.groupdict().items()})
                self._error(404, "NotFound", f"hub double does not implement {method} {path}")

            def _repo(self, repo_id: str, head=False) -> Repo | None:
                repo = hub.repos.get(repo_id)
                if repo is None:
                    self._error(404, "RepoNotFound", "Repository not found", head=head)
                return repo

            def create_repo(self, method):
                body = json.loads(self._body())
                repo_id = f"{body['organization']}/{body['name']}" if body.get("organization") else body["name"]
                with hub.lock:
                    if repo_id in hub.repos:
                        return self._error(409, "RepoExists", "You already created this model repo",
                                           {"X-Error-Message": "You already created this model repo"})
                    hub.repos[repo_id] = Repo()
                self._json(200, {"url": f"{hub.url}/{repo_id}", "name": repo_id})

            def validate_yaml(self, method):
                content = json.loads(self._body())["content"]
                match = re.match(r"^---\n(.*?)\n---\n", content, re.S)
                try:
                    meta = yaml.safe_load(match.group(1)) if match else None
                except yaml.YAMLError as err:
                    return self._json(400, {"errors": [{"message": str(err)}]})
                if not isinstance(meta, dict):
                    return self._json(400, {"errors": [{"message": "README.md has no YAML metadata block"}]})
                self._json(200, {"errors": [], "warnings": []})

            def repo_info(self, method, repo, rev=None):
                stored = self._repo(repo)
                if stored is None:
                    return
                snap = stored.snapshot(rev or "main")
                if snap is None and stored.commits:
                    return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
                sha, files = snap or ("0" * 40, {})
                self._json(200, {"id": repo, "modelId": repo, "sha": sha, "private": False,
                                 "siblings": [{"rfilename": p} for p in sorted(files)]})

            def tree(self, method, repo, rev, sub=None):
                stored = self._repo(repo)
                if stored is None:
                    return
                snap = stored.snapshot(rev)
                if snap is None:
                    return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
                entries = []
                for p, f in sorted(snap[1].items()):
                    if sub and not p.startswith(sub.rstrip("/") + "/"):
                        continue
                    entry = {"type": "file", "path": p, "size": len(f.data), "oid": git_blob_sha1(f.data)}
                    if f.lfs:
                        entry["lfs"] = {"oid": hashlib.sha256(f.data).hexdigest(), "size": len(f.data),
                                        "pointerSize": 134}
                    entries.append(entry)
                self._json(200, entries)

            def preupload(self, method, repo, rev):
                if self._repo(repo) is None:
                    return
                files = json.loads(self._body())["files"]
                modes = [{"path": f["path"], "shouldIgnore": False,
                          "uploadMode": "lfs" if f["path"].endswith(LFS_SUFFIXES) or f["size"] > 1_000_000
                          else "regular"}
                         for f in files]
                self._json(200, {"files": modes})

            def lfs_batch(self, method, repo):
                if self._repo(repo) is None:
                    return
                objects = []
                for obj in json.loads(self._body())["objects"]:
                    entry = {"oid": obj["oid"], "size": obj["size"]}
                    if obj["oid"] not in hub.lfs_objects:
                        entry["actions"] = {"upload": {"href": f"{hub.url}/lfs-upload/{obj['oid']}"}}
                    objects.append(entry)
                self._json(200, {"transfer": "basic", "objects": objects},
                           {"Content-Type": "application/vnd.git-lfs+json"})

            def lfs_put(self, method, oid):
                data = self._body()
                if hashlib.sha256(data).hexdigest() != oid:
                    return self._error(400, "BadRequest", "LFS object does not match its oid")
                with hub.lock:
                    hub.lfs_objects[oid] = data
                self._send(200)

            def commit(self, method, repo, rev):
                stored = self._repo(repo)
                if stored is None:
                    return
                files = dict(stored.commits[-1][1]) if stored.commits else {}
                for line in self._body().splitlines():
                    item = json.loads(line)
                    key, value = item["key"], item["value"]
                    if key == "file":
                        files[value["path"]] = StoredFile(base64.b64decode(value["content"]), lfs=False)
                    elif key == "lfsFile":
                        data = hub.lfs_objects.get(value["oid"])
                        if data is None:
                            return self._error(400, "BadRequest", f"LFS object {value['oid']} was never uploaded")
                        files[value["path"]] = StoredFile(data, lfs=True)
                    elif key == "deletedFile":
                        files.pop(value["path"], None)
                with hub.lock:
                    sha = hub._commit_sha(repo, files, len(stored.commits))
                    stored.commits.append((sha, files))
                self._json(200, {"commitUrl": f"{hub.url}/{repo}/commit/{sha}", "commitOid": sha, "success": True})

            def resolve(self, method, repo, rev, file):
                head = method == "HEAD"
                stored = hub.repos.get(repo)
                if stored is None:
                    return self._error(404, "RepoNotFound", "Repository not found", head=head)
                snap = stored.snapshot(rev)
                if snap is None:
                    return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}", head=head)
                sha, files = snap
                if file not in files:
                    return self._error(404, "EntryNotFound", f"{file} does not exist", {"X-Repo-Commit": sha},
                                       head=head)
                f = files[file]
                headers = {"X-Repo-Commit": sha, "ETag": f'"{git_blob_sha1(f.data)}"',
                           "Content-Type": "application/octet-stream"}
                if f.lfs:
                    headers.update({"X-Linked-Etag": f'"{hashlib.sha256(f.data).hexdigest()}"',
                                    "X-Linked-Size": str(len(f.data))})
                self._send(200, f.data, headers, head=head)

        return Handler


REPO_ROOT = Path(__file__).resolve().parents[1]
TEST_TOKEN = "hf_visaeServiceTestToken0123456789"


def clean_env(**extra) -> dict:
    """This environment without HF_ settings, with wandb off and one thread, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(WANDB_MODE="disabled", OMP_NUM_THREADS="1", HF_HUB_DISABLE_TELEMETRY="1", **extra)
    return env


@contextlib.contextmanager
def python_against_hub(home: Path) -> Iterator[tuple[HubDouble, Callable[..., subprocess.CompletedProcess]]]:
    """A running HubDouble and `run(*args)`: `python *args` whose Hub client talks to it, its cache under `home`."""
    hub = HubDouble().start()
    env = clean_env(HF_ENDPOINT=hub.url, HF_HUB_DISABLE_XET="1", HF_HOME=str(home), HF_TOKEN=TEST_TOKEN,
                    HF_HUB_DISABLE_PROGRESS_BARS="1")

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, cwd=REPO_ROOT,
                              timeout=300)

    try:
        yield hub, run
    finally:
        hub.stop()
