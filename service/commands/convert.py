"""`visae convert`: turn a local saev `sae.pt` or ViT-Prisma checkpoint (+ config.json) into a visae
SAE folder, recording the conversion in cfg.json metadata. Files needing full unpickling are refused."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "convert", help="convert a saev or ViT-Prisma SAE checkpoint to visae's format",
        description="Read a foreign SAE checkpoint with torch.load(weights_only=True) only, map its hook name to "
                    "visae's, and write a visae SAE folder (SAELens format).")
    p.add_argument("source", help="checkpoint file: saev sae.pt, or a ViT-Prisma .pt with config.json beside it")
    p.add_argument("out", help="SAE folder to write")
    p.add_argument("--format", choices=("saev", "prisma"), help="source format (default: recognised from the file)")
    p.add_argument("--config", help="ViT-Prisma config.json (default: next to the checkpoint)")
    p.add_argument("--hook", help="visae hook name, e.g. blocks.-2.resid_post (default: from the source config)")
    p.add_argument("--model", help="visae model spec the SAE was trained on, e.g. open_clip:ViT-B-16/openai")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from visae.sae.converters import convert_file

    sae = convert_file(args.source, fmt=args.format, hook_name=args.hook, model_name=args.model, config=args.config)
    print(sae.save(args.out))
    return 0
