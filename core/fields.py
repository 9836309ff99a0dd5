"""What each config field accepts, declared beside the field, so `--help` and validation read the same rule.

    k: Annotated[int, bounds(ge=1)] = 32  # active latents per token
    run_name: Annotated[Optional[str], folder_name()] = None  # name of the run folder

A rule is `tyro.conf.arg` metadata whose help hint is the rule's own method: tyro prints the rule after the
default in `--help` (`(default: 32; >= 1)`), and `check_fields`, called by each config's `__post_init__`,
finds the same rule and refuses a value outside it, naming the field. `check_fields` also checks each value
against its annotated type, for configs built from JSON or by hand, where no parser has checked it.
"""

from __future__ import annotations

import abc
import dataclasses
import functools
import math
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Union

import tyro
from omegaconf import MISSING


class Rule(abc.ABC):
    """What a field accepts: `problem` says what is wrong with a value (None: nothing), `describe` states the rule."""

    @abc.abstractmethod
    def describe(self) -> str: ...

    @abc.abstractmethod
    def problem(self, value: Any) -> str | None: ...

    def hint(self, default: str) -> str:
        """tyro's help hint: the default, then the rule."""
        return f"(default: {default}; {self.describe()})"


@dataclass(frozen=True)
class Bounds(Rule):
    """A numeric range (on a list field, each element's), and whether a list needs an element. Every limit is
    optional."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    non_empty: bool = False

    def describe(self) -> str:
        return ", ".join(self._limits() + ["at least one value"] * self.non_empty)

    def _limits(self) -> list[str]:
        limits = [(">=", self.ge), (">", self.gt), ("<=", self.le), ("<", self.lt)]
        return [f"{sign} {limit:g}" for sign, limit in limits if limit is not None]

    def problem(self, value: Any) -> str | None:
        if isinstance(value, (list, tuple)):
            if self.non_empty and not value:
                return "needs at least one value"
            return next((p for p in map(self.problem, value) if p is not None), None)
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        inside = math.isfinite(value) and all(check for check in (
            self.ge is None or value >= self.ge, self.gt is None or value > self.gt,
            self.le is None or value <= self.le, self.lt is None or value < self.lt))
        return None if inside else f"must be {', '.join(self._limits())}, got {value:g}"


@dataclass(frozen=True)
class FolderName(Rule):
    """One plain folder name, which cannot climb out of or across its parent folder."""

    def describe(self) -> str:
        return "one folder name, no '/'"

    def problem(self, value: Any) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip() or value in (".", "..") or any(
                sep in value for sep in ("/", "\\", "\0")):
            return f"must be one plain folder name (no '/', '..' or empty), got {value!r}"
        return None


def bounds(*, ge: float | None = None, gt: float | None = None, le: float | None = None,
           lt: float | None = None, non_empty: bool = False) -> Any:
    """Field metadata: numbers (or each element of a list of numbers) within these limits; `non_empty`: a list
    with at least one element."""
    return tyro.conf.arg(help_behavior_hint=Bounds(ge, gt, le, lt, non_empty).hint)


def folder_name() -> Any:
    """Field metadata: a single folder name (or None)."""
    return tyro.conf.arg(help_behavior_hint=FolderName().hint)


def check_fields(instance: Any) -> None:
    """Refuse, naming the field, any value of the wrong type or outside its declared rule.
    Nested dataclasses check themselves when built; required fields not yet set are left alone."""
    check_values(type(instance), {spec.name: getattr(instance, spec.name) for spec in dataclasses.fields(instance)})


def check_values(schema: type, values: dict[str, Any], setting: str | None = None) -> None:
    """`check_fields` for some of `schema`'s fields given as a mapping (e.g. `sae_params`, checked before the
    config it completes is built); a key that is not a field is refused, naming `setting` and the fields."""
    hints = _annotations(schema)
    unknown = sorted(set(values) - set(hints))
    if unknown:
        raise ValueError(f"{setting or schema.__name__} has no field {', '.join(unknown)}; its fields are "
                         f"{', '.join(f.name for f in dataclasses.fields(schema))}")
    for name, value in values.items():
        if value is tyro.MISSING or (isinstance(value, str) and value == MISSING):
            continue
        if not _matches(value, hints[name]):
            raise ValueError(f"{name} must be {_type_name(hints[name])}, got {value!r} ({type(value).__name__})")
        for rule in field_rules(hints[name]):
            problem = rule.problem(value)
            if problem is not None:
                raise ValueError(f"{name} {problem}")


@functools.cache
def _annotations(schema: type) -> dict[str, Any]:
    """`schema`'s field annotations, resolved once per class (configs are built often: a sweep grid's members)."""
    return typing.get_type_hints(schema, include_extras=True)


def field_rules(hint: Any) -> list[Rule]:
    """The rules declared in a field's annotation (`Annotated[int, bounds(ge=1)]`)."""
    if typing.get_origin(hint) is not Annotated:
        return []
    hints = (getattr(meta, "help_behavior_hint", None) for meta in hint.__metadata__)
    return [owner for owner in (getattr(h, "__self__", None) for h in hints) if isinstance(owner, Rule)]


def _matches(value: Any, hint: Any) -> bool:
    """Whether `value` is an instance of the annotation `hint` (ints count as floats, bools as neither)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Annotated:
        return _matches(value, args[0])
    if hint is Any or (isinstance(hint, type) and dataclasses.is_dataclass(hint)):
        return True
    if origin in (Union, types.UnionType):
        return any(_matches(value, option) for option in args)
    if hint is type(None):
        return value is None
    if origin in (list, tuple):
        return isinstance(value, (list, tuple)) and all(_matches(item, args[0]) for item in value)
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint) if isinstance(hint, type) else True


def _type_name(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Annotated:
        return _type_name(args[0])
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(option) for option in args)
    if origin in (list, tuple):
        return f"a list of {_type_name(args[0])}"
    names = {int: "a whole number", float: "a number", str: "text", bool: "true or false", type(None): "None"}
    return names.get(hint, getattr(hint, "__name__", str(hint)))
