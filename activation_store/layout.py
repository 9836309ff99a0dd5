"""Token layouts and hook-point names, shared by every model family (docs/hooks-and-tokens.md)."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

TOKEN_KINDS = ("all", "cls", "registers", "patches")
SITES = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_in", "mlp_out", "mlp_hidden")
_BLOCK_HOOK = re.compile(r"^blocks\.(-?\d+)\.([a-z_]+)$")


@dataclass(frozen=True)
class TokenLayout:
    """Where each kind of token sits in a model's sequence."""

    n_tokens: int
    cls_index: int | None
    register_indices: tuple[int, ...]
    patch_indices: tuple[int, ...]
    grid: tuple[int, int]

    def indices(self, kind: str) -> list[int]:
        """Sequence positions of one token kind, in order."""
        check_token_kind(kind)
        if kind == "all":
            return list(range(self.n_tokens))
        if kind == "cls":
            if self.cls_index is None:
                raise ValueError("this model has no CLS token; choose tokens from 'patches', 'registers' or 'all'")
            return [self.cls_index]
        if kind == "registers":
            if not self.register_indices:
                raise ValueError("this model has no register tokens; choose tokens from 'cls', 'patches' or 'all'")
            return list(self.register_indices)
        return list(self.patch_indices)

    def subset(self, kind: str) -> TokenLayout:
        """The layout of the tokens that remain after keeping only `kind`."""
        kept = self.indices(kind)
        where = {old: new for new, old in enumerate(kept)}
        return TokenLayout(
            n_tokens=len(kept),
            cls_index=where.get(self.cls_index) if self.cls_index is not None else None,
            register_indices=tuple(where[i] for i in self.register_indices if i in where),
            patch_indices=tuple(where[i] for i in self.patch_indices if i in where),
            grid=self.grid if kind in ("all", "patches") else (0, 0),
        )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TokenLayout:
        return cls(
            n_tokens=int(d["n_tokens"]),
            cls_index=None if d["cls_index"] is None else int(d["cls_index"]),
            register_indices=tuple(int(i) for i in d["register_indices"]),
            patch_indices=tuple(int(i) for i in d["patch_indices"]),
            grid=(int(d["grid"][0]), int(d["grid"][1])),
        )


def check_token_kind(kind: str) -> str:
    if kind not in TOKEN_KINDS:
        raise ValueError(f"unknown token kind {kind!r}; choose one of {', '.join(TOKEN_KINDS)}")
    return kind


def hook_points(n_blocks: int) -> list[str]:
    """Every hook point of a model with `n_blocks` blocks, in forward order."""
    return ["embed"] + [f"blocks.{i}.{site}" for i in range(n_blocks) for site in SITES]


def canonical_hook(name: str, n_blocks: int) -> str:
    """Resolve negative block indices and validate a hook name against a model's depth."""
    if name == "embed":
        return name
    m = _BLOCK_HOOK.match(name)
    if m is None or m.group(2) not in SITES or not -n_blocks <= int(m.group(1)) < n_blocks:
        raise ValueError(
            f"unknown hook point {name!r}; valid: 'embed' or 'blocks.<i>.<site>' with i in "
            f"[{-n_blocks}, {n_blocks - 1}] and site one of {', '.join(SITES)}"
        )
    return f"blocks.{int(m.group(1)) % n_blocks}.{m.group(2)}"


def hook_block(name: str) -> int:
    """The block a canonical hook lives in (-1 for `embed`)."""
    return -1 if name == "embed" else int(name.split(".")[1])
