"""`visae publish`: upload SAE folders to a Hugging Face Hub repo, one folder per SAE id, with a model
card and a checksum manifest. The token comes from HF_TOKEN or `huggingface-cli login`; it is never printed."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "publish", help="upload SAE folders to a Hugging Face Hub repo",
        description="Upload SAE folders (cfg.json + sae_weights.safetensors) to --repo in one commit, as "
                    "<hook>/<architecture>-k<k>-x<expansion>/ folders (or --sae-id), with a README.md model card "
                    "and visae_manifest.json (figures and sha256 of every file). SAEs already in the repo are kept.")
    p.add_argument("dirs", nargs="+", metavar="DIR", help="SAE folders to publish")
    p.add_argument("--repo", required=True, help="Hub repo id, org/name (created if missing)")
    p.add_argument("--sae-id", action="append", dest="sae_ids", metavar="ID",
                   help="SAE id (folder in the repo) for each DIR, in order (default: derived from cfg.json)")
    p.add_argument("--base-model", help="Hub id of the base model for the card (default: derived from the model spec)")
    p.add_argument("--private", action="store_true", help="create the repo private")
    p.add_argument("--message", help="commit message")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from visae.sae.hub import publish

    url = publish(args.dirs, args.repo, sae_ids=args.sae_ids, base_model=args.base_model, private=args.private,
                  commit_message=args.message)
    print(url)
    return 0
