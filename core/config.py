"""Typed dataclass configs from YAML plus overrides, the one loader every layer's config uses (omegaconf)."""

from __future__ import annotations

import dataclasses
import os
import typing
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, TypeVar, cast

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

T = TypeVar("T")


def load_typed_config(schema: type[T], yaml_path: str | os.PathLike | None = None,
                      *layers: dict | list[str]) -> T:
    """`schema`'s defaults <- the YAML file <- each layer in turn, as a `schema` instance.

    A layer is a dict of set values (None entries are skipped, so unset command-line flags change
    nothing) or a list of `key=value` strings (dotted keys reach nested fields).
    """
    with _named_errors(schema, yaml_path):
        # omegaconf types `to_object` as any container; a structured config of `schema` gives a `schema` instance
        return cast(T, OmegaConf.to_object(_merge(schema, yaml_path, layers)))


def typed_config_values(schema: type, yaml_path: str | os.PathLike | None = None, *layers: dict | list[str]) -> dict:
    """The same merge as `load_typed_config`, type-checked field by field, as a plain dict of field values
    (nested dataclasses as dicts) that builds nothing: required fields set nowhere hold `MISSING` and no
    `__post_init__` runs, so command-line flags can still complete the settings (service.cli)."""
    with _named_errors(schema, yaml_path):
        # omegaconf types `to_container` as any container; a DictConfig gives a dict
        return cast(dict, OmegaConf.to_container(_merge(schema, yaml_path, layers)))


def _merge(schema: type, yaml_path: str | os.PathLike | None, layers: tuple) -> DictConfig:
    sources = [_settings_file(Path(yaml_path)) if yaml_path is not None else {},
               *(OmegaConf.from_dotlist(list(layer)) if isinstance(layer, (list, tuple))
                 else {k: v for k, v in layer.items() if v is not None} for layer in layers)]
    # omegaconf types `merge`, `create` and `to_container` as any config or container; every source here is a
    # mapping, so each gives a DictConfig or a dict
    values = (cast(dict, OmegaConf.to_container(OmegaConf.create(source))) for source in sources)
    merged = OmegaConf.merge(OmegaConf.structured(schema), *(_whole_floats_to_int(schema, v) for v in values))
    return cast(DictConfig, merged)


def _settings_file(path: Path) -> dict:
    """The mapping of settings in a YAML file (an empty file sets nothing); anything else is refused by name."""
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    try:
        values = OmegaConf.load(path)  # omegaconf's safe loader, where 4e6 is a number
    except UnicodeDecodeError:
        raise ValueError(f"config file {path} is not a text file; give a YAML file of settings such as "
                         "`k: 32`") from None
    except OSError as err:  # omegaconf's answer to a file holding one scalar ("Invalid loaded object type")
        if "Invalid loaded object type" not in str(err):
            raise
        values = None
    if not isinstance(values, DictConfig):
        raise ValueError(f"config file {path} holds {'a list' if values is not None else 'a single value'}, not a "
                         "mapping of settings; write one `field: value` per line, e.g. `k: 32`")
    return cast(dict, OmegaConf.to_container(values))


@contextmanager
def _named_errors(schema: type, yaml_path: str | os.PathLike | None) -> Iterator[None]:
    """omegaconf's errors as ValueErrors naming the field and the file."""
    try:
        yield
    except MissingMandatoryValue as err:
        raise ValueError(f"missing required setting {err.full_key!r}; set it in the YAML file or on the "
                         "command line") from None
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None)
        where = f"field {key!r}" if key else schema.__name__
        message = str(getattr(err, "msg", None) or err).splitlines()[0]
        raise ValueError(f"bad {where} in {yaml_path or 'the settings given'}: {message}") from None
    except yaml.YAMLError as err:
        raise ValueError(f"{yaml_path} is not valid YAML: {' '.join(str(err).split())}") from None


def _whole_floats_to_int(schema: type, values: dict) -> dict:
    """`total_tokens=4e6` is a float to YAML; give integer fields the whole numbers written that way."""
    hints = typing.get_type_hints(schema)
    for name, value in values.items():
        hint = hints.get(name)
        if isinstance(value, dict) and isinstance(hint, type) and dataclasses.is_dataclass(hint):
            _whole_floats_to_int(hint, value)
        elif isinstance(value, list) and typing.get_origin(hint) is list:
            values[name] = [_as_int(item, typing.get_args(hint)[0]) for item in value]
        else:
            values[name] = _as_int(value, hint)
    return values


def _as_int(value, hint):
    options = typing.get_args(hint) or (hint,)
    if isinstance(value, float) and value.is_integer() and int in options and float not in options:
        return int(value)
    return value
