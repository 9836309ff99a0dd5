"""`visae harvest`: write a model's activations at some hook points into an activation store."""

from __future__ import annotations

import argparse

from visae.activation_store.harvest_config import BAD_FILE_POLICIES, load_harvest_config
from visae.activation_store.layout import TOKEN_KINDS
from visae.activation_store.store import COMPRESSIONS, DTYPES, ActivationStore

_FLAGS = ("out", "model", "weights", "images", "tokens", "n_images", "batch_size", "dtype", "compression",
          "bad_files", "num_workers", "device")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "harvest", help="harvest activations into a Zarr store",
        description="Harvest a vision model's activations at several hook points into a Zarr activation store "
                    "(local path or s3://bucket/path). Rerunning the same command resumes an interrupted harvest. "
                    "Under `torchrun --nproc_per_node=N` the ranks share the work.")
    p.add_argument("--config", help="YAML file of HarvestConfig fields; flags and KEY=VALUE overrides win over it")
    p.add_argument("--model", help="model spec, e.g. timm:vit_base_patch16_224, open_clip:ViT-B-32/openai, "
                                   "visae:toy-vit-shapes (default)")
    p.add_argument("--weights", help="local weights file (safetensors or a timm/open_clip checkpoint)")
    p.add_argument("--images", help="image source: a folder, list:FILE.txt, skimage, shapes:n=1000,seed=0")
    p.add_argument("--hooks", help="comma-separated hook points, e.g. blocks.-1.resid_post,blocks.4.mlp_hidden")
    p.add_argument("--tokens", choices=TOKEN_KINDS, help="which tokens to keep (default all)")
    p.add_argument("--out", help="store path or s3://bucket/path")
    p.add_argument("--n-images", type=int, help="harvest the first N readable images (default: all)")
    p.add_argument("--batch-size", type=int, help="images per forward pass and per store chunk (default 64)")
    p.add_argument("--dtype", choices=DTYPES, help="stored dtype (default float16)")
    p.add_argument("--compression", choices=COMPRESSIONS, help="chunk compression (default none)")
    p.add_argument("--bad-files", choices=BAD_FILE_POLICIES,
                   help="skip (default: record the file and the reason) or fail on unreadable images")
    p.add_argument("--num-workers", type=int, help="image-decoding threads (default 4)")
    p.add_argument("--device", help="torch device (default cpu)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="extra config overrides, e.g. progress=false")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from visae.activation_store.harvester import harvest  # imports the model libraries, only when harvesting

    flags = {name: getattr(args, name) for name in _FLAGS}
    if args.hooks:
        flags["hooks"] = [h.strip() for h in args.hooks.split(",") if h.strip()]
    store = harvest(load_harvest_config(args.config, flags, args.overrides))
    print(describe(store))
    return 0


def describe(store: ActivationStore) -> str:
    """What a store holds, for people."""
    lines = [f"store      {store.path}  ({'complete' if store.complete else 'INCOMPLETE'}, "
             f"fingerprint {store.fingerprint})",
             f"model      {store.model_spec}",
             f"images     {store.n_images} from {store.source_spec}, {len(store.skipped)} skipped",
             f"tokens     {store.token_kind}: {store.layout.n_tokens} per image"]
    lines += [f"acts/{hook:<24} {list(store.acts(hook).shape)} {store.dtype}" for hook in store.hooks]
    lines += [f"skipped    {image_id}: {reason}" for image_id, reason in store.skipped[:10]]
    return "\n".join(lines)
