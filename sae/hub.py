"""Publishing SAE folders to the Hugging Face Hub and downloading them again (docs/dictionary-formats.md).

A visae repo holds one folder per SAE id (e.g. `blocks.9.resid_post/topk-k32-x16/`), a README.md model
card and `visae_manifest.json` with each SAE's figures and every file's sha256; all go up in one
commit. Downloads go through `hf_hub_download` and the normal Hub cache (so `HF_HUB_OFFLINE=1` works
from the cache) and are checked against the manifest. Releases in other formats (saev, ViT-Prisma)
are converted once into a visae folder kept next to the Hub cache.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub import constants as hf_constants
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    HTTPError,  # pyright: ignore[reportPrivateImportUsage]  (the HTTP client's base error, which the Hub client raises)
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from visae.core.file_hash import file_sha256
from visae.sae.converters import convert_prisma, convert_saev
from visae.sae.converters.hooks import saev_hook
from visae.sae.file_format import CFG_FILE, SPARSITY_FILE, WEIGHTS_FILE, read_sae_folder
from visae.sae.model_card import render_model_card
from visae.sae.pretrained import PretrainedSAE, resolve
from visae.sae.registry import architecture_traits

MANIFEST_FILE = "visae_manifest.json"
MANIFEST_FORMAT = "visae-hub-manifest/1"


@contextmanager
def reaching_the_hub(what: str) -> Iterator[None]:
    """A Hub that cannot be reached, or that answers with an error status, as one line naming the endpoint
    and the next step (ConnectionError: an OSError, which the `visae` command prints on one line)."""
    try:
        yield
    except LocalEntryNotFoundError:
        raise ConnectionError(f"cannot {what}: the Hub at {hf_constants.ENDPOINT} cannot be reached and the file is "
                              "not in the local cache; check the network (or HF_ENDPOINT) and rerun, or set "
                              "HF_HUB_OFFLINE=1 to use cached files only") from None
    except (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError):
        raise  # the Hub answered: its callers say what is missing
    except HfHubHTTPError as err:
        status = err.response.status_code if err.response is not None else "an error"
        raise ConnectionError(f"cannot {what}: the Hub at {hf_constants.ENDPOINT} answered {status} "
                              f"({str(err).splitlines()[0]}); check the token's rights and the repo id, then "
                              "rerun") from None
    except HTTPError as err:  # the HTTP client's transport errors: refused, timed out, reset
        raise ConnectionError(f"cannot {what}: the Hub at {hf_constants.ENDPOINT} cannot be reached ({err}); "
                              "check the network (or HF_ENDPOINT) and rerun") from None


# ---- publishing ---------------------------------------------------------------------------------


def default_sae_id(cfg: dict[str, Any]) -> str:
    """`<hooks>/<architecture>[-k<k>]-x<expansion>`, e.g. blocks.9.resid_post/topk-k32-x16; a transcoder's hooks are
    `<hook>-to-<out hook>`, a crosscoder's `<hook>+<hook>+...`, and its expansion is over one hook's width."""
    meta = cfg.get("metadata") or {}
    trained = (meta.get("visae_training_config") or {}).get("architecture", cfg["architecture"])
    d_in, d_sae = _hook_width(cfg), int(cfg["d_sae"])
    width = f"x{d_sae // d_in}" if d_in and d_sae % d_in == 0 else f"n{d_sae}"
    k = (meta.get("visae_training_config") or {}).get("k", cfg.get("k"))
    name = f"{trained}-k{k}-{width}" if k and architecture_traits(trained).uses_k else f"{trained}-{width}"
    hooks = "+".join(hooks_read(cfg)) or "sae"
    if meta.get("hook_name_out"):
        hooks += f"-to-{meta['hook_name_out']}"
    return f"{hooks}/{name}"


def _hook_width(cfg: dict[str, Any]) -> int:
    """The width the expansion factor is over: d_in, or a crosscoder's hooks' common width (0 if they differ)."""
    dims = {int(d) for d in cfg.get("hook_dims") or [cfg["d_in"]]}
    return dims.pop() if len(dims) == 1 else 0


def hooks_read(cfg: dict[str, Any]) -> list[str]:
    """The hooks a dictionary reads: a crosscoder's `hook_names`, else its one `hook_name` (none if unrecorded)."""
    meta = cfg.get("metadata") or {}
    return list(meta.get("hook_names") or ([meta["hook_name"]] if meta.get("hook_name") else []))


def folder_files(folder: Path) -> list[str]:
    """The files of a dictionary folder that are published with it: cfg.json, the weights, the sparsity and its
    architecture's own files (a crosscoder's hook_profile.safetensors), where present as regular files; nothing
    else (not `eval/`, notes or symlinks)."""
    cfg = json.loads((folder / CFG_FILE).read_text())
    names = (CFG_FILE, WEIGHTS_FILE, SPARSITY_FILE, *architecture_traits(cfg["architecture"]).extra_files)
    return [name for name in names if (folder / name).is_file() and not (folder / name).is_symlink()]


def _hooks_entry(cfg: dict[str, Any], figures: dict[str, Any]) -> dict[str, Any]:
    """The dictionary's kind and, for a transcoder or crosscoder, the hooks it reads and writes with their widths
    and, where `figures` (metadata and eval summary) have it, each hook's FVU (a transcoder's is its output's)."""
    meta = cfg.get("metadata") or {}
    kind = architecture_traits(cfg["architecture"]).kind
    if kind == "transcoder":
        out = meta.get("hook_name_out")
        fvu = figures.get("fvu")
        return {"kind": kind, "hook_name_out": out, "d_out": cfg.get("d_out"),
                "fvu_per_hook": {out: fvu} if out and fvu is not None else None}
    if kind == "crosscoder":
        per_hook = figures.get("per_hook") or {}
        fvus = {hook: per_hook[hook].get("fvu") for hook in hooks_read(cfg) if hook in per_hook}
        return {"kind": kind, "hook_names": hooks_read(cfg), "hook_dims": [int(d) for d in cfg["hook_dims"]],
                "fvu_per_hook": fvus or None}
    return {"kind": kind}


def manifest_entry(folder: Path, sae_id: str) -> dict[str, Any]:
    """Figures and file checksums of one validated SAE folder."""
    cfg, _ = read_sae_folder(folder)
    meta = cfg.get("metadata") or {}
    summary_file = folder / "eval" / "summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
    figure = lambda key: meta.get(key, summary.get(key))  # noqa: E731
    files = {name: {"sha256": file_sha256(folder / name), "size": (folder / name).stat().st_size}
             for name in folder_files(folder)}
    return {
        "path": sae_id,
        "architecture": (meta.get("visae_training_config") or {}).get("architecture", cfg["architecture"]),
        "file_architecture": cfg["architecture"],
        "d_in": int(cfg["d_in"]),
        "d_sae": int(cfg["d_sae"]),
        "k": cfg.get("k"),
        "model_name": meta.get("model_name"),
        "hook_name": meta.get("hook_name"),
        "token_kind": meta.get("token_kind"),
        "fvu": figure("fvu"),
        "l0": figure("l0"),
        "dead_fraction": figure("dead_fraction"),
        "training_tokens": meta.get("training_tokens"),
        **_hooks_entry(cfg, {**summary, **(meta.get("eval_summary") or {}), "fvu": figure("fvu")}),
        "files": files,
    }


def _existing_manifest(api: HfApi, repo_id: str, token: str | None) -> dict[str, Any]:
    try:
        path = hf_hub_download(repo_id, MANIFEST_FILE, token=token, endpoint=api.endpoint)
    except (EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError):
        return {"format": MANIFEST_FORMAT, "library": "visae", "saes": {}}
    return json.loads(Path(path).read_text())


def publish(
    dirs: Iterable[str | Path],
    repo_id: str,
    sae_ids: list[str] | None = None,
    base_model: str | None = None,
    token: str | None = None,
    private: bool = False,
    commit_message: str | None = None,
) -> str:
    """Upload SAE folders to `repo_id` (created if needed) in one commit; returns the commit URL.

    SAEs already in the repo's manifest are kept; an SAE id published again is replaced.
    The token (else the usual HF_TOKEN / cached login) goes only to the Hub client.
    """
    dirs = [Path(d) for d in dirs]
    if not dirs:
        raise ValueError("give at least one SAE folder to publish")
    if sae_ids is not None and len(sae_ids) != len(dirs):
        raise ValueError(f"got {len(sae_ids)} SAE ids for {len(dirs)} folders; give one id per folder or none")
    ids = sae_ids or [default_sae_id(read_sae_folder(d)[0]) for d in dirs]
    if len(set(ids)) != len(ids):
        raise ValueError(f"two folders map to the same SAE id ({ids}); pass explicit ids")
    api = HfApi(token=token)
    with reaching_the_hub(f"publish to {repo_id}"), tempfile.TemporaryDirectory(prefix="visae-publish-") as staging:
        api.create_repo(repo_id, exist_ok=True, private=private)
        manifest = _existing_manifest(api, repo_id, token)
        staging = Path(staging)
        for folder, sae_id in zip(dirs, ids):
            manifest["saes"][sae_id] = manifest_entry(folder, sae_id)
            (staging / sae_id).mkdir(parents=True)
            for name in manifest["saes"][sae_id]["files"]:
                shutil.copyfile(folder / name, staging / sae_id / name)
        (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True))
        (staging / "README.md").write_text(render_model_card(repo_id, manifest, base_model))
        info = api.upload_folder(
            repo_id=repo_id, folder_path=staging,
            commit_message=commit_message or f"visae: publish {', '.join(ids)}",
        )
    return info.commit_url


# ---- downloading --------------------------------------------------------------------------------


def _hub_file(repo_id: str, filename: str, revision: str | None, token: str | None) -> Path:
    """One file through the Hub cache, with errors that say what is wrong."""
    try:
        with reaching_the_hub(f"download {filename} of {repo_id}"):
            return Path(hf_hub_download(repo_id, filename, revision=revision, token=token))
    except RepositoryNotFoundError as err:
        raise FileNotFoundError(
            f"Hub repo {repo_id} not found (404), or it is private and no valid token was given"
        ) from err
    except RevisionNotFoundError as err:
        raise FileNotFoundError(f"Hub repo {repo_id} has no revision {revision!r}") from err
    except EntryNotFoundError as err:
        raise FileNotFoundError(f"Hub repo {repo_id} has no file {filename}") from err


def verify_checksum(path: Path, expected: str, what: str) -> None:
    actual = file_sha256(path)
    if actual != expected:
        raise ValueError(
            f"checksum mismatch for {what}: the manifest says sha256 {expected} but the file has {actual}; "
            f"the repo or the cached copy ({path}) is corrupt — delete the cached file and download again"
        )


def download_visae(ref: PretrainedSAE, revision: str | None = None, token: str | None = None) -> Path:
    """The cached folder of one SAE of a visae repo, every file checked against the manifest."""
    manifest_path = _hub_file(ref.repo_id, MANIFEST_FILE, revision, token)
    manifest = json.loads(manifest_path.read_text())
    commit = manifest_path.parent.name  # snapshots/<commit>/: read every file from the same commit
    entry = manifest.get("saes", {}).get(ref.sae_id)
    if entry is None:
        known = ", ".join(sorted(manifest.get("saes", {})))
        raise ValueError(f"{ref.repo_id} has no SAE {ref.sae_id!r}; it has {known}")
    folder = None
    for name, info in entry["files"].items():
        try:
            local = _hub_file(ref.repo_id, f"{entry['path']}/{name}", commit, token)
        except FileNotFoundError as err:
            raise ValueError(
                f"{ref.repo_id} is incomplete: its manifest lists {entry['path']}/{name} but the repo lacks it "
                "(an interrupted upload?); publish the SAE again"
            ) from err
        verify_checksum(local, info["sha256"], f"{ref.repo_id}/{entry['path']}/{name}")
        folder = local.parent
    if folder is None:
        raise ValueError(f"{ref.repo_id}'s manifest lists no files for {ref.sae_id!r}; publish the SAE again")
    return folder


def converted_folder(source: Path) -> Path:
    """Where the visae conversion of a foreign checkpoint is kept (keyed by the source's sha256)."""
    return Path(hf_constants.HF_HUB_CACHE).parent / "visae-converted" / file_sha256(source)[:32]


def _saev_manifest_entry(ref: PretrainedSAE, revision: str | None, token: str | None) -> dict[str, Any]:
    assert ref.manifest is not None  # called for releases with a manifest only
    lines = _hub_file(ref.repo_id, ref.manifest, revision, token).read_text().splitlines()
    rows = [json.loads(line) for line in lines if line.strip()]
    for row in rows:
        if row.get("path") in (ref.sae_id, f"{ref.sae_id}/sae.pt"):
            return row
    known = ", ".join(r["path"].removesuffix("/sae.pt") for r in rows)
    raise ValueError(f"{ref.repo_id} has no SAE {ref.sae_id!r}; its {ref.manifest} lists {known}")


def _prisma_files(ref: PretrainedSAE, revision: str | None, token: str | None) -> tuple[Path, Path]:
    if ref.path:
        return _hub_file(ref.repo_id, ref.path, revision, token), _hub_file(ref.repo_id, "config.json", revision, token)
    snapshot = Path(
        snapshot_download(ref.repo_id, revision=revision, token=token, allow_patterns=["*.pt", "config.json"])
    )
    weights = sorted(snapshot.glob("*.pt"))
    if len(weights) != 1:
        raise ValueError(f"{ref.repo_id} holds {len(weights)} .pt files; name the one to use in the registry entry")
    return weights[0], snapshot / "config.json"


def download_foreign(ref: PretrainedSAE, revision: str | None = None, token: str | None = None) -> Path:
    """Download a saev or ViT-Prisma SAE and convert it (once) into a visae folder."""
    if ref.format == "saev":
        hook = ref.hook_name
        if ref.manifest:
            row = _saev_manifest_entry(ref, revision, token)
            source = _hub_file(ref.repo_id, row["path"], revision, token)
            verify_checksum(source, row["sha256"], f"{ref.repo_id}/{row['path']}")
            hook = hook or saev_hook(row["layer"])
            path = row["path"]
        else:
            path = ref.path or "sae.pt"
            source = _hub_file(ref.repo_id, path, revision, token)
        convert = lambda: convert_saev(source, hook_name=hook, model_name=ref.model,  # noqa: E731
                                       source=f"hf://{ref.repo_id}/{path}")
    else:
        source, config = _prisma_files(ref, revision, token)
        convert = lambda: convert_prisma(source, config, hook_name=ref.hook_name, model_name=ref.model,  # noqa: E731
                                         source=f"hf://{ref.repo_id}/{source.name}")
    out = converted_folder(source)
    if not (out / CFG_FILE).is_file():
        sae = convert()
        sae.cfg.metadata["conversion"]["release"] = ref.release
        sae.save(out)
    return out


def download_sae(release_or_repo_id: str, sae_id: str, revision: str | None = None, token: str | None = None) -> Path:
    """Local folder (visae format) of one SAE of a registry release or an `org/name` visae repo."""
    ref = resolve(release_or_repo_id, sae_id)
    with reaching_the_hub(f"download {sae_id} of {release_or_repo_id}"):
        if ref.format == "visae":
            return download_visae(ref, revision, token)
        return download_foreign(ref, revision, token)


