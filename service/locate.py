"""Turning `visae serve` arguments (a folder, a hub release or an `org/name` repo) into SAE folders."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from visae.eval.results import EVAL_DIRNAME, EvalResults


def locate(spec: str) -> list[tuple[str, Path]]:
    """(name, folder) of every SAE that `spec` names: a folder, or `RELEASE[:SAE_ID]` /
    `ORG/NAME[:SAE_ID]` on the Hub (every SAE of the release or repo when no SAE id is given)."""
    path = Path(spec).expanduser()
    if path.exists():
        return _local(path)
    reference, _, sae_id = spec.partition(":")
    if reference.count("/") <= 1 and not spec.startswith((".", "/", "~")):
        return [_from_hub(reference, one) for one in ([sae_id] if sae_id else _hub_sae_ids(reference))]
    raise FileNotFoundError(f"{spec} does not exist; pass an SAE folder, a hub release name or an org/name repo id")


def _local(path: Path) -> list[tuple[str, Path]]:
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is not a folder; pass an SAE folder (with cfg.json) or a folder of them")
    if (path / "cfg.json").is_file():
        _note_unevaluated(path)
        return [(_name(path), path)]
    folders = sorted(p.parent for p in path.rglob("cfg.json") if EVAL_DIRNAME not in p.relative_to(path).parts[:-1])
    if not folders:
        raise FileNotFoundError(f"no SAE folder (with cfg.json) under {path}")
    for folder in folders:
        _note_unevaluated(folder)
    return [("--".join(p.relative_to(path).parts), p) for p in folders]


def _note_unevaluated(path: Path) -> None:
    if not EvalResults.exists(path):
        print(f"visae serve: {path} has no eval results: serving it without example images "
              f"(run `visae eval {path} --store STORE` for them)", file=sys.stderr)


def _name(path: Path) -> str:
    """A training run keeps its dictionary in RUN/sae: name it after the run."""
    return path.parent.name if path.name == "sae" and path.parent.name else path.name


def _hub_sae_ids(reference: str) -> list[str]:
    """The SAE ids of a registry release, or those in an `org/name` repo's manifest."""
    from visae.sae.pretrained import releases, resolve

    release = releases().get(reference)
    if release is not None:
        ids = [entry["id"] for entry in release.get("saes", [])]
        if not ids:
            raise ValueError(f"release {reference} lists its SAEs in a manifest; name one as {reference}:SAE_ID")
        return ids
    resolve(reference, "")  # refuses a name that is neither a release nor an org/name repo id
    from huggingface_hub import hf_hub_download

    from visae.sae.hub import MANIFEST_FILE

    manifest = json.loads(Path(hf_hub_download(reference, MANIFEST_FILE)).read_text())
    return sorted(manifest.get("saes", {}))


def _from_hub(reference: str, sae_id: str) -> tuple[str, Path]:
    """One Hub SAE through the SAE library's own download (Hub cache, checksums, conversion of foreign formats)."""
    from visae.sae.hub import download_sae

    folder = Path(download_sae(reference, sae_id))
    _note_unevaluated(folder)
    return f"{reference}--{sae_id}", folder
