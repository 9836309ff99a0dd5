"""The hooks a training run reads, by the kind of dictionary it trains (`sae.ArchitectureTraits.kind`):

| kind | hooks, in the order a batch holds them side by side |
|---|---|
| `sae` | `hook` |
| `transcoder` | `hook` (the input), then `out_hook` (the hook it predicts), both from `store` |
| `crosscoder` | `hook`, then each of `cross_hooks`, from `store` or from the matching one of `cross_stores` |

`open_hook_set` checks the config against the architecture's kind, opens and verifies every store, spells each
hook canonically and refuses what the stores lack (naming the hooks they hold) or a crosscoder over hooks of
different widths unless `hook_widths` states them. A `HookSet` then gives the loader (`ActivationLoader` over all
the hooks, aligned across stores: `activation_store.aligned`), the dictionary's shape, its metadata, and one
fingerprint over every store (what a resume must find again).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TypeVar

import torch

from visae.activation_store.loader import ActivationLoader
from visae.activation_store.store import ActivationStore
from visae.sae import architecture_traits
from visae.training.config import TrainConfig
from visae.training.data import open_store, store_hook

Config = TypeVar("Config", bound=TrainConfig)


@dataclass(frozen=True)
class HookSet:
    """Every (store, canonical hook) a run reads, in batch order, and the kind of dictionary reading them."""

    stores: tuple[ActivationStore, ...]
    hooks: tuple[str, ...]
    kind: str

    @property
    def store(self) -> ActivationStore:
        """The first hook's store: it plans the loader's epochs and names the model in the metadata."""
        return self.stores[0]

    @property
    def dims(self) -> list[int]:
        return [store.d(hook) for store, hook in zip(self.stores, self.hooks)]

    @property
    def d_in(self) -> int:
        """The width the dictionary encodes: the input hook's, or every hook's together for a crosscoder."""
        return sum(self.dims) if self.kind == "crosscoder" else self.dims[0]

    def shape(self) -> dict:
        """The SAEConfig fields that follow from the hooks' widths."""
        if self.kind == "transcoder":
            return {"d_in": self.dims[0], "d_out": self.dims[1], "apply_b_dec_to_input": False}
        if self.kind == "crosscoder":
            return {"d_in": self.d_in, "hook_dims": self.dims}
        return {"d_in": self.d_in}

    @property
    def fingerprint(self) -> str:
        """The store's fingerprint, or every distinct store's joined by '+'."""
        return "+".join(dict.fromkeys(store.fingerprint for store in self.stores))

    def canonical(self, cfg: Config) -> Config:
        """`cfg` with every hook spelled as the stores record it."""
        if self.kind == "transcoder":
            return replace(cfg, hook=self.hooks[0], out_hook=self.hooks[1])
        return replace(cfg, hook=self.hooks[0], cross_hooks=list(self.hooks[1:]))

    def loader(self, cfg: TrainConfig, batch_size: int, seed: int,
               device: torch.device | None = None) -> ActivationLoader:
        return ActivationLoader(self.store, list(self.hooks), tokens=cfg.tokens, batch_size=batch_size, seed=seed,
                                device=device, hook_stores=list(self.stores))

    def metadata(self, cfg: TrainConfig) -> dict:
        """What the dictionary's metadata records of its data (SAELens's keys where it has them)."""
        store = self.store
        meta = {"model_name": store.model_spec, "hook_name": self.hooks[0], "token_kind": cfg.tokens,
                "store": str(cfg.store), "store_fingerprint": self.fingerprint,
                "model_weights_sha256": store.attrs["model"].get("weights_sha256"),
                "model_state_sha256": store.attrs["model"].get("state_sha256")}
        if self.kind == "transcoder":
            meta["hook_name_out"] = self.hooks[1]
        if self.kind == "crosscoder":
            meta |= {"hook_names": list(self.hooks), "model_names": [s.model_spec for s in self.stores],
                     "stores": [str(cfg.store), *(cfg.cross_stores or [str(cfg.store)] * len(cfg.cross_hooks))]}
        return meta


def open_hook_set(cfg: TrainConfig) -> HookSet:
    """The hooks `cfg` reads, checked (see the module)."""
    kind = check_kind(cfg)
    store, hook = open_store(cfg.store, cfg.hook)
    pairs = [(store, hook)]
    if kind == "transcoder":
        assert cfg.out_hook is not None  # check_kind
        pairs.append((store, store_hook(store, cfg.out_hook)))
    if kind == "crosscoder":
        opened = {cfg.store: store}
        for path, other in zip(cfg.cross_stores or [cfg.store] * len(cfg.cross_hooks), cfg.cross_hooks):
            if path not in opened:
                opened[path] = open_store(path, other)[0]
            pairs.append((opened[path], store_hook(opened[path], other)))
    hooks = HookSet(tuple(s for s, _ in pairs), tuple(h for _, h in pairs), kind)
    if kind == "crosscoder":
        check_widths(hooks, cfg.hook_widths)
    return hooks


def check_kind(cfg: TrainConfig) -> str:
    """The kind of `cfg.architecture`, after refusing hook fields that kind does not read."""
    arch, kind = cfg.architecture, architecture_traits(cfg.architecture).kind
    if kind == "transcoder" and not cfg.out_hook:
        raise ValueError(f"a {arch} predicts `out_hook` from `hook`; set out_hook, e.g. --hook blocks.2.mlp_in "
                         "--out-hook blocks.2.mlp_out")
    if kind == "crosscoder" and not cfg.cross_hooks:
        raise ValueError(f"a {arch} reads `hook` and `cross_hooks` together; set cross_hooks, e.g. --hook "
                         "blocks.1.resid_post --cross-hooks blocks.3.resid_post blocks.5.resid_post")
    if kind != "transcoder" and cfg.out_hook:
        raise ValueError(f"out_hook is for transcoders and {arch} is a {kind}; drop out_hook or choose a transcoder "
                         "architecture (e.g. topk_skip_transcoder)")
    if kind != "crosscoder" and (cfg.cross_hooks or cfg.cross_stores or cfg.hook_widths):
        raise ValueError(f"cross_hooks, cross_stores and hook_widths are for crosscoders and {arch} is a {kind}; "
                         "drop them or choose architecture crosscoder")
    if cfg.cross_stores and len(cfg.cross_stores) != len(cfg.cross_hooks):
        raise ValueError(f"cross_stores names {len(cfg.cross_stores)} stores for {len(cfg.cross_hooks)} cross_hooks; "
                         "give one store per cross hook (or none: all from `store`)")
    return kind


def check_widths(hooks: HookSet, stated: list[int]) -> None:
    """A crosscoder over hooks of different widths needs them stated (`hook_widths`); stated widths must match."""
    dims = hooks.dims
    widths = ", ".join(f"{h}: {d}" for h, d in zip(hooks.hooks, dims))
    if stated and list(stated) != dims:
        raise ValueError(f"hook_widths {list(stated)} disagree with the stores ({widths}); state {dims} or drop it")
    if len(set(dims)) > 1 and not stated:
        raise ValueError(f"the crosscoder's hooks have different widths ({widths}); to train one dictionary over "
                         f"them anyway, state every width with hook_widths {' '.join(map(str, dims))}")
