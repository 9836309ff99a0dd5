"""Turning `visae serve` arguments (a folder, a hub release or an `org/name` repo) into SAE folders."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from eval.results import EVAL_DIRNAME, EvalResults


def locate(spec: str) -> list[tuple[str, Path]]:
    """(name, folder) of every evaluated SAE that `spec` names: a folder, or `RELEASE[:SAE_ID]` /
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
        _require_eval(path)
        return [(_name(path), path)]
    folders = sorted(p.parent for p in path.rglob("cfg.json") if EVAL_DIRNAME not in p.relative_to(path).parts[:-1])
    evaluated = [p for p in folders if EvalResults.exists(p)]
    for skipped in sorted(set(folders) - set(evaluated)):
        print(f"visae serve: skipping {skipped}: no eval results (run `visae eval {skipped} --store STORE`)",
              file=sys.stderr)
    if not evaluated:
        raise FileNotFoundError(f"no evaluated SAE folder under {path}; run `visae eval SAE_DIR --store STORE` first")
    return [("--".join(p.relative_to(path).parts), p) for p in evaluated]


def _name(path: Path) -> str:
    """A training run keeps its dictionary in RUN/sae: name it after the run."""
    return path.parent.name if path.name == "sae" and path.parent.name else path.name


def _require_eval(path: Path) -> None:
    if not EvalResults.exists(path):
        raise FileNotFoundError(f"{path} has no eval results; run `visae eval {path} --store STORE` first")


def _hub_sae_ids(reference: str) -> list[str]:
    """The SAE ids of a registry release, or those in an `org/name` repo's manifest."""
    from sae.pretrained import releases, resolve

    release = releases().get(reference)
    if release is not None:
        ids = [entry["id"] for entry in release.get("saes", [])]
        if not ids:
            raise ValueError(f"release {reference} lists its SAEs in a manifest; name one as {reference}:SAE_ID")
        return ids
    resolve(reference, "")  # refuses a name that is neither a release nor an org/name repo id
    from huggingface_hub import hf_hub_download

    from sae.hub import MANIFEST_FILE

    manifest = json.loads(Path(hf_hub_download(reference, MANIFEST_FILE)).read_text())
    return sorted(manifest.get("saes", {}))


def _from_hub(reference: str, sae_id: str) -> tuple[str, Path]:
    """One Hub SAE through the SAE library's own download (Hub cache, checksums, conversion of foreign formats)."""
    from sae.hub import download_sae

    folder = Path(download_sae(reference, sae_id))
    if not EvalResults.exists(folder):
        raise FileNotFoundError(
            f"{reference}:{sae_id} (downloaded to {folder}) has no eval results; copy that folder, run "
            f"`visae eval COPY --store STORE` on it, then `visae serve COPY`")
    return f"{reference}--{sae_id}", folder
