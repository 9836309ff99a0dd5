"""The wheel installs one namespace, `visae`, holding every sub-package and data file of the repository."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PIPELINE = ("core", "activation_store", "sae", "training", "eval", "service")


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory) -> set[str]:
    out, source = tmp_path_factory.mktemp("wheel"), tmp_path_factory.mktemp("source")
    # Built from a copy of the files git sees, so no stale build/ folder of the checkout can fill gaps.
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split()
    for name in files:
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(source)], check=True, capture_output=True, cwd=out)
    (wheel,) = out.glob("visae-*.whl")
    return set(zipfile.ZipFile(wheel).namelist())


def test_wheel_holds_only_the_visae_namespace(wheel_names):
    tops = {name.split("/")[0] for name in wheel_names}
    assert {top for top in tops if not top.endswith(".dist-info")} == {"visae"}


def test_every_package_and_data_file_is_in_the_wheel(wheel_names):
    packages = [p.parent for top in PIPELINE for p in (ROOT / top).rglob("__init__.py")]
    missing = [str(p.relative_to(ROOT)) for p in packages
               if f"visae/{p.relative_to(ROOT).as_posix()}/__init__.py" not in wheel_names]
    assert not missing, f"add these packages to [tool.setuptools] packages in pyproject.toml: {missing}"
    for data in ("activation_store/models/weights/toy-vit-shapes.safetensors", "sae/pretrained.yaml",
                 "service/web/index.html", "service/web/static/app.js", "__main__.py"):
        assert f"visae/{data}" in wheel_names


def test_pipeline_folders_are_not_importable_bare(tmp_path):
    for name in PIPELINE:
        bare = subprocess.run([sys.executable, "-c", f"import {name}"], cwd=tmp_path, capture_output=True)
        assert bare.returncode != 0, f"`import {name}` works outside the repository"
    # Package data is found through the namespace from any folder (the packaged Hub registry, the toy model).
    namespaced = subprocess.run([sys.executable, "-c", "from visae.sae.pretrained import releases; "
                                 "from visae.activation_store.models import load_model; "
                                 "assert releases(); load_model('visae:toy-vit-shapes')"], cwd=tmp_path)
    assert namespaced.returncode == 0
