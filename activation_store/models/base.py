"""The one interface every vision model family implements: hook points, token layout, preprocessing.

A family adapter only says where things are (`BlockParts` per block, the module whose input is `embed`) and how a
block's forward splits at `resid_mid`; capturing, splicing and early stopping live here, once, on real submodules
with PyTorch forward hooks.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from PIL import Image
from torch import nn
from torchvision import transforms
from torchvision.transforms import InterpolationMode

from visae.activation_store.layout import TokenLayout, canonical_hook, hook_block, hook_points
from visae.core.image_bounds import check_resize

ActivationFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Preprocess:
    """Resize the shorter side to `size`, centre-crop to `crop`×`crop`, scale to [0, 1], normalise."""

    size: int
    crop: int
    mean: tuple[float, ...]  # per channel (RGB)
    std: tuple[float, ...]
    interpolation: str = "bicubic"
    _geometry: Callable = field(init=False, repr=False, compare=False)
    _to_tensor: Callable = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.size, self.crop = int(self.size), int(self.crop)
        self.mean, self.std = tuple(float(m) for m in self.mean), tuple(float(s) for s in self.std)
        modes = [m.value for m in InterpolationMode]
        if self.interpolation not in modes:
            raise ValueError(f"unknown interpolation {self.interpolation!r}; choose one of {', '.join(modes)}")
        if self.crop > self.size:
            raise ValueError(f"crop {self.crop} is larger than the resize {self.size}; use crop <= size")
        self._geometry = transforms.Compose(
            [transforms.Resize(self.size, InterpolationMode(self.interpolation)), transforms.CenterCrop(self.crop)]
        )
        self._to_tensor = transforms.Compose([transforms.ToTensor(), transforms.Normalize(self.mean, self.std)])

    def resize_crop(self, image: Image.Image) -> Image.Image:
        """The image exactly as the model sees it, before normalisation (for thumbnails and heatmap overlays).

        Raises `core.image_bounds.ImageBoundsError` (a ValueError) for an image longer than 64:1 or one whose
        resize would exceed the pixel budget, before anything is allocated."""
        width, height = image.size
        short, long = min(width, height), max(width, height)
        check_resize(width, height, self.size, int(self.size * long / short) if short else 0)  # torchvision's size
        return self._geometry(image)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        """PIL RGB image -> normalised float tensor [3, crop, crop]."""
        return self._to_tensor(self.resize_crop(image))

    def batch(self, images: Sequence[Image.Image]) -> torch.Tensor:
        return torch.stack([self(im) for im in images])

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items() if not k.startswith("_")}

    @classmethod
    def from_dict(cls, d: dict) -> Preprocess:
        return cls(d["size"], d["crop"], tuple(d["mean"]), tuple(d["std"]), d.get("interpolation", "bicubic"))


@dataclass(frozen=True)
class BlockParts:
    """Submodules of one transformer block whose inputs/outputs are the block's hook points.

    attn_out is the output of `attn_scale` (layer-scale, or an Identity where the model has none), mlp_out the
    output of `mlp_scale`, mlp_hidden the input of `mlp_down` (the MLP's output projection, so it is the hidden
    layer after the nonlinearity for plain and gated MLPs alike), resid_mid the input of `mlp_norm` and mlp_in its
    output (what the MLP reads). `mlp_scale(mlp(mlp_in))` is mlp_out: the function a transcoder imitates.
    """

    block: nn.Module
    attn_scale: nn.Module
    mlp_scale: nn.Module
    mlp_down: nn.Linear
    mlp_norm: nn.Module
    mlp: nn.Module


class _StopForward(Exception):
    """Raised from the deepest hooked block so run_with_cache skips the rest of the network."""


def _same_shape(name: str, fn: ActivationFn) -> ActivationFn:
    """fn, refusing results that are not a tensor shaped like its input (a mistake would surface far away)."""

    def checked(act: torch.Tensor) -> torch.Tensor:
        out = fn(act)
        if not isinstance(out, torch.Tensor) or out.shape != act.shape:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(
                f"the function spliced at {name} must return a tensor of shape {tuple(act.shape)}, got {got}"
            )
        return out

    return checked


class VisionModel(abc.ABC):
    """A vision transformer with named hook points (docs/hooks-and-tokens.md) and its own preprocessing.

    Subclasses provide `_embed_input` (the module whose *input* is the `embed` hook: patch embeddings plus
    positions), `_parts` (one BlockParts per block), `_split_forward` (a block forward with a function applied
    at resid_mid), and `output` (pixels -> the model's output).
    """

    spec: str
    module: nn.Module
    layout: TokenLayout
    preprocess: Preprocess
    weights_sha256: str | None = None
    _embed_input: nn.Module
    _parts: list[BlockParts]

    @property
    def n_blocks(self) -> int:
        return len(self._parts)

    @property
    def d_model(self) -> int:
        return self._parts[0].mlp_down.out_features

    @property
    def d_mlp(self) -> int:
        return self._parts[0].mlp_down.in_features

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    def hook_points(self) -> list[str]:
        return hook_points(self.n_blocks)

    def canonical(self, hook: str) -> str:
        """Validate a hook name and resolve a negative block index; the error lists the valid choices."""
        return canonical_hook(hook, self.n_blocks)

    def hook_dim(self, hook: str) -> int:
        return self.d_mlp if self.canonical(hook).endswith(".mlp_hidden") else self.d_model

    @abc.abstractmethod
    def output(self, pixels: torch.Tensor) -> Any:
        """The model's own output for preprocessed pixels (logits, embedding, or a dict of heads)."""

    @torch.no_grad()
    def forward(self, pixels: torch.Tensor) -> Any:
        """The model's output (classifier logits, CLIP image embedding, ...), with any active splices applied."""
        return self.output(pixels)

    __call__ = forward

    @torch.no_grad()
    def run_with_cache(self, pixels: torch.Tensor, hooks: Sequence[str]) -> dict[str, torch.Tensor]:
        """Capture every hook in `hooks` in one forward pass that stops after the deepest hooked block.

        Returns {canonical hook: Tensor[B, n_tokens, d]}.
        """
        names = list(dict.fromkeys(self.canonical(h) for h in hooks))
        if not names:
            raise ValueError(f"no hook points requested; choose from {self.hook_points()[:8]} ...")
        cache: dict[str, torch.Tensor] = {}
        with contextlib.ExitStack() as stack:
            for name in names:
                stack.enter_context(self._attach(name, lambda act, name=name: cache.__setitem__(name, act)))
            stack.enter_context(self._stop_after(max(hook_block(n) for n in names)))
            try:
                self.output(pixels)
            except _StopForward:
                pass
        return {name: cache[name] for name in names}

    @contextlib.contextmanager
    def splice(self, hook: str, fn: ActivationFn) -> Iterator[None]:
        """Inside this context the real forward pass uses fn(act) in place of the activation at `hook`.

        `act` is [B, n_tokens, d]; fn returns a tensor of the same shape (it may change only some tokens).
        """
        name = self.canonical(hook)
        fn = _same_shape(name, fn)
        if name.endswith(".resid_mid"):
            with self._splice_resid_mid(self._parts[hook_block(name)].block, fn):
                yield
        else:
            with self._attach(name, fn, replace=True):
                yield

    @contextlib.contextmanager
    def splice_from(self, source: str, hook: str, fn: ActivationFn) -> Iterator[None]:
        """Inside this context the activation at `hook` is replaced by fn(the activation at `source` in the same
        forward pass): a transcoder's prediction of `blocks.i.mlp_out` from `blocks.i.mlp_in` in place of the MLP's
        output. `source` must be computed before `hook`; fn returns a tensor shaped like the activation at `hook`."""
        seen: list[torch.Tensor] = []

        def keep(act: torch.Tensor) -> torch.Tensor:
            seen[:] = [act]
            return act

        def predict(_act: torch.Tensor) -> torch.Tensor:
            if not seen:
                raise ValueError(f"{source} is computed after {hook} in the forward pass; splice from a hook before it")
            return fn(seen.pop())

        with self.splice(source, keep), self.splice(hook, predict):
            yield

    def _site(self, name: str) -> tuple[nn.Module, str]:
        """(module, 'input' | 'output') where a canonical hook's activation is found."""
        if name == "embed":
            return self._embed_input, "input"
        parts = self._parts[hook_block(name)]
        site = name.split(".")[2]
        return {
            "resid_pre": (parts.block, "input"),
            "resid_mid": (parts.mlp_norm, "input"),
            "resid_post": (parts.block, "output"),
            "attn_out": (parts.attn_scale, "output"),
            "mlp_in": (parts.mlp_norm, "output"),
            "mlp_out": (parts.mlp_scale, "output"),
            "mlp_hidden": (parts.mlp_down, "input"),
        }[site]

    @contextlib.contextmanager
    def _attach(self, name: str, fn: Callable, replace: bool = False) -> Iterator[None]:
        """Call fn on the activation at `name`; with replace=True its result replaces the activation."""
        module, where = self._site(name)
        if where == "input":

            def pre_hook(_module, args):
                out = fn(args[0])
                return (out, *args[1:]) if replace else None

            handle = module.register_forward_pre_hook(pre_hook)
        else:

            def post_hook(_module, _args, output):
                out = fn(output)
                return out if replace else None

            handle = module.register_forward_hook(post_hook)
        try:
            yield
        finally:
            handle.remove()

    @contextlib.contextmanager
    def _stop_after(self, block: int) -> Iterator[None]:
        def stop(*_):
            raise _StopForward

        if block < 0:
            handle = self._embed_input.register_forward_pre_hook(stop)
        else:
            handle = self._parts[block].block.register_forward_hook(stop)
        try:
            yield
        finally:
            handle.remove()

    @contextlib.contextmanager
    def _splice_resid_mid(self, block: nn.Module, fn: ActivationFn) -> Iterator[None]:
        """Swap the block's forward for one that applies fn between its attention and MLP residual adds."""

        if "forward" in vars(block):
            raise ValueError("this block's resid_mid is already spliced; nest splices at different hook points")

        def forward(x, *args, **kwargs):
            return self._split_forward(block, x, fn, *args, **kwargs)

        block.forward = forward
        try:
            yield
        finally:
            del block.forward

    @abc.abstractmethod
    def _split_forward(self, block: nn.Module, x: torch.Tensor, fn: ActivationFn, *args, **kwargs) -> torch.Tensor:
        """The block's forward with `fn` applied to its residual stream after the attention add."""

