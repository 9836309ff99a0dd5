"""The hooks a dictionary reads and the hooks it reconstructs, by its kind (`sae.ArchitectureTraits.kind`):

| kind | reads (encoded, side by side) | writes (reconstructed, in `SAE.hook_slices` order) |
|---|---|---|
| `sae` | `hook_name` | `hook_name` |
| `transcoder` | `hook_name` (e.g. blocks.2.mlp_in) | `hook_name_out` (e.g. blocks.2.mlp_out) |
| `crosscoder` | every one of `hook_names` | the same hooks |

The names come from the dictionary's cfg.json metadata, as training recorded them; `--hook` replaces the first
hook read (as `visae train --hook` names it). `visae eval` reads every hook from the one store it is given, so a
crosscoder trained on hooks of several stores is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from visae.activation_store.layout import canonical_hook
from visae.sae import SAE


@dataclass(frozen=True)
class DictionaryHooks:
    kind: str  # sae, transcoder or crosscoder
    reads: tuple[str, ...]
    writes: tuple[str, ...]
    widths: dict[str, int]  # the width the dictionary expects at each hook

    @classmethod
    def of(cls, sae: SAE, meta: dict, hook: str | None = None) -> DictionaryHooks:
        """The hooks of `sae` as its metadata `meta` names them, `hook` (if given) replacing the first one read."""
        kind = type(sae).traits.kind
        if kind == "crosscoder":
            stores = sorted({str(s) for s in meta.get("stores") or []})
            if len(stores) > 1 or len(set(meta.get("model_names") or [])) > 1:
                raise ValueError(f"this crosscoder reads hooks of several stores ({', '.join(stores)}); visae eval "
                                 "reads every hook from one store, so it cannot evaluate it")
            names = list(meta.get("hook_names") or [])
            if len(names) != len(sae.cfg.hook_dims or []):
                raise ValueError(f"a crosscoder's cfg.json names its hooks in metadata.hook_names, one per hook_dims "
                                 f"entry ({sae.cfg.hook_dims}); got {names}")
            reads = [hook or names[0], *names[1:]]
            return cls(kind, tuple(reads), tuple(reads), dict(zip(reads, sae.cfg.hook_dims or [])))
        first = hook or meta.get("hook_name")
        if first is None:
            raise ValueError("the dictionary names no hook_name in its cfg.json metadata; pass --hook")
        if kind == "transcoder":
            out = meta.get("hook_name_out")
            if out is None:
                raise ValueError("a transcoder's cfg.json names the hook it predicts in metadata.hook_name_out; "
                                 "add it (e.g. blocks.2.mlp_out) to evaluate it")
            return cls(kind, (first,), (out,), {first: sae.cfg.d_in, out: int(sae.W_dec.shape[1])})
        return cls(kind, (first,), (first,), {first: sae.cfg.d_in})

    @property
    def hook(self) -> str:
        """The (first) hook the latents are computed from: what top images and heatmaps show."""
        return self.reads[0]

    @property
    def all(self) -> list[str]:
        """Every hook the dictionary needs, once each, reads first."""
        return list(dict.fromkeys(self.reads + self.writes))

    def canonical(self, n_blocks: int) -> DictionaryHooks:
        """The hooks spelled as a store of a model with `n_blocks` blocks records them."""

        def one(name: str) -> str:
            return canonical_or_same(name, n_blocks)

        return replace(self, reads=tuple(map(one, self.reads)), writes=tuple(map(one, self.writes)),
                       widths={one(h): d for h, d in self.widths.items()})


def canonical_or_same(hook: str, n_blocks: int) -> str:
    """`hook` spelled canonically for a model of `n_blocks` blocks; a name that is no hook of that model is kept, for
    the error that names it."""
    try:
        return canonical_hook(hook, n_blocks)
    except ValueError:
        return hook
