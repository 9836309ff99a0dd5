"""Mapping other libraries' hook names to visae's (docs/hooks-and-tokens.md)."""

from __future__ import annotations

import re

# TransformerLens-style names as used by ViT-Prisma: blocks.{L}.hook_<site> and blocks.{L}.mlp.hook_post.
_PRISMA_SITES = {
    "hook_resid_pre": "resid_pre",
    "hook_resid_mid": "resid_mid",
    "hook_resid_post": "resid_post",
    "hook_attn_out": "attn_out",
    "hook_mlp_out": "mlp_out",
    "mlp.hook_post": "mlp_hidden",
}
_PRISMA_HOOK = re.compile(r"^blocks\.(-?\d+)\.(.+)$")


def prisma_hook(name: str) -> str:
    """'blocks.9.hook_resid_post' -> 'blocks.9.resid_post'."""
    m = _PRISMA_HOOK.match(name)
    if m is None or m.group(2) not in _PRISMA_SITES:
        raise ValueError(
            f"ViT-Prisma hook {name!r} has no visae equivalent; visae maps blocks.N.{{{', '.join(_PRISMA_SITES)}}}"
        )
    return f"blocks.{m.group(1)}.{_PRISMA_SITES[m.group(2)]}"


def saev_hook(layer: int) -> str:
    """saev records the residual stream leaving a block (its 'layer'); negative layers count from the end."""
    return f"blocks.{int(layer)}.resid_post"
