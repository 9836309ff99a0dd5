"""Session fixtures of the service tests: two small evaluated dictionaries on one store, and their catalog."""

import pytest
from service_dictionary import Built, build_dictionaries

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
