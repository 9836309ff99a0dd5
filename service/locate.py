"""Turning `visae serve` arguments (a folder, a hub release or an `org/name` repo) into SAE folders."""

from __future__ import annotations

import sys
from pathlib import Path

from eval.results import EVAL_DIRNAME, EvalResults


def locate(spec: str) -> list[tuple[str, Path]]:
    """(name, folder) of every evaluated SAE that `spec` names."""
    path = Path(spec).expanduser()
    if path.exists():
        return _local(path)
    if spec.count("/") <= 1 and not spec.startswith((".", "/", "~")):
        return _local(_download(spec))
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


def _download(release_or_repo: str) -> Path:
    """A hub release or repo, downloaded (or found in the cache) with the SAE library's own hub client."""
    from sae.hub import download_release

    return Path(download_release(release_or_repo))
