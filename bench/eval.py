"""Evaluation throughput relative to a bare forward pass of the same model, measured in one run.

Prints one JSON object: the store pass (encode + metrics + sparse codes) in tokens/s, the spliced downstream pass
in images/s, a bare forward pass in images/s and tokens/s, and the ratios of the two to the bare pass.

    python bench/eval.py [--model visae:toy-vit-shapes] [--images shapes:n=256,seed=0] [--hook blocks.-2.resid_post]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from visae.activation_store.harvest_config import HarvestConfig
from visae.activation_store.harvester import harvest
from visae.activation_store.loader import ActivationLoader
from visae.activation_store.models import load_model
from visae.eval.config import EvalConfig
from visae.eval.evaluate import SourceImages, evaluate
from visae.sae import SAEConfig, create_sae


def bare_forward_images_per_s(model, images: SourceImages, batch: int) -> float:
    pixels = [images(s, min(s + batch, images.n)) for s in range(0, images.n, batch)]
    with torch.no_grad():
        model.forward(pixels[0])  # warm-up
        start = time.perf_counter()
        for p in pixels:
            model.forward(p)
    return images.n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="visae:toy-vit-shapes")
    parser.add_argument("--weights", default=None)
    parser.add_argument("--images", default="shapes:n=256,seed=0")
    parser.add_argument("--hook", default="blocks.-2.resid_post")
    parser.add_argument("--tokens", default="all")
    parser.add_argument("--d-sae", type=int, default=2048)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="visae-bench-eval-") as tmp:
        store = harvest(HarvestConfig(out=str(Path(tmp) / "store.zarr"), model=args.model, weights=args.weights,
                                      images=args.images, hooks=[args.hook], tokens=args.tokens,
                                      batch_size=args.batch, progress=False))
        hook = store.hooks[0]
        sae = create_sae(SAEConfig(architecture="topk", d_in=store.d(hook), d_sae=args.d_sae, k=args.k,
                                   normalize_activations="none",
                                   metadata={"hook_name": hook, "token_kind": args.tokens, "model_name": args.model}))
        sae.init_from_data(next(iter(ActivationLoader(store, hook, tokens=args.tokens, batch_size=4096))))
        sae_dir = sae.save(Path(tmp) / "sae")
        result = evaluate(EvalConfig(sae_dir=str(sae_dir), store=store.path, weights=args.weights,
                                     batch_images=args.batch, downstream_images=store.n_images, progress=False))
        model = load_model(store.model_spec, weights=args.weights)
        images = SourceImages(store, store.n_images, model.preprocess)
        bare = bare_forward_images_per_s(model, images, args.batch)
    throughput = result.summary["throughput"]
    tokens_per_image = store.layout.n_tokens
    bare_tokens = bare * tokens_per_image
    print(json.dumps({
        "model": args.model, "hook": hook, "tokens": args.tokens, "n_images": store.n_images, "d_sae": args.d_sae,
        "k": args.k, "bare_forward_images_per_s": bare, "bare_forward_tokens_per_s": bare_tokens,
        "eval_store_pass_tokens_per_s": throughput["store_tokens_per_s"],
        "eval_store_pass_vs_bare_forward_tokens": throughput["store_tokens_per_s"] / bare_tokens,
        "spliced_images_per_s": throughput["images_per_s"]["spliced"],
        "spliced_vs_bare_forward_images": throughput["images_per_s"]["spliced"] / bare,
        "clean_pass_images_per_s": throughput["images_per_s"]["clean"],
        "torch_threads": torch.get_num_threads(),
    }, indent=2))


if __name__ == "__main__":
    main()
