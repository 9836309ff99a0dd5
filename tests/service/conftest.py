"""Session fixtures of the service tests: two small evaluated dictionaries on one store, a transcoder and a
crosscoder on another, and their catalogs."""

import pytest
from service_dictionary import Built, build_dictionaries
from service_multi_hook import MultiHookBuilt, build_multi_hook

from visae.service.catalog import Catalog
from visae.service.locate import locate


@pytest.fixture(scope="session")
def built(tmp_path_factory) -> Built:
    root = tmp_path_factory.getbasetemp() / "service-dictionaries"
    root.mkdir(exist_ok=True)
    return build_dictionaries(root)


@pytest.fixture(scope="session")
def catalog(built: Built) -> Catalog:
    """The two dictionaries, with ids `resid` and `mlp`."""
    return Catalog.load(locate(str(built.resid)) + locate(str(built.mlp)), weights=str(built.weights))


@pytest.fixture(scope="session")
def multi_hook(tmp_path_factory) -> MultiHookBuilt:
    """A skip transcoder (block 0's MLP) and a crosscoder (two residual streams), evaluated where eval can."""
    root = tmp_path_factory.getbasetemp() / "service-multi-hook"
    root.mkdir(exist_ok=True)
    return build_multi_hook(root)


@pytest.fixture(scope="session")
def multi_catalog(multi_hook: MultiHookBuilt) -> Catalog:
    """The transcoder and crosscoder, with ids `transcoder` and `crosscoder`."""
    return Catalog.load(locate(str(multi_hook.transcoder)) + locate(str(multi_hook.crosscoder)),
                        weights=str(multi_hook.weights))
