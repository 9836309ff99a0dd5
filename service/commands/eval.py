"""`visae eval`: measure a dictionary (reconstruction, sparsity, spliced downstream effect, interpretability) and
write SAE_DIR/eval: summary.json, features.parquet, top.safetensors, thumbs/ and a self-contained report.html."""

from __future__ import annotations

import argparse

_FLAGS = ("sae_dir", "store", "model", "images", "weights", "hook", "max_images", "batch_images", "top_k",
          "n_quantiles", "downstream_images", "vocabulary", "report_features", "device")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval", help="evaluate a dictionary and write its feature table and HTML report",
        description="Evaluate an SAE folder on an activation store (or on a model and image source, harvested to a "
                    "temporary store) and write SAE_DIR/eval. Metrics follow design.md §5; the summary figures are "
                    "also written into the SAE's cfg.json metadata.")
    p.add_argument("sae_dir", help="SAE folder (cfg.json + sae_weights.safetensors)")
    p.add_argument("--store", help="activation store holding the SAE's hook (path or s3://...)")
    p.add_argument("--model", help="model spec to harvest from instead of a store (with --images)")
    p.add_argument("--images", help="image source to harvest from instead of a store (with --model)")
    p.add_argument("--weights", help="local model weights file")
    p.add_argument("--hook", help="hook point (default: the SAE's metadata hook_name)")
    p.add_argument("--max-images", type=int, help="evaluate the first N images (default: all)")
    p.add_argument("--batch-images", type=int, help="images per batch (default 64)")
    p.add_argument("--top-k", type=int, help="top images / patches kept per latent (default 16)")
    p.add_argument("--n-quantiles", type=int, help="activation-quantile samples per latent (default 8)")
    p.add_argument("--downstream-images", type=int, help="images for the spliced forward passes (default 256)")
    p.add_argument("--no-model", action="store_true",
                   help="skip the model passes (spliced downstream effect, monosemanticity, text labels)")
    p.add_argument("--vocabulary", help="text file of concepts, one per line, for CLIP text labels")
    p.add_argument("--compare-to", nargs="+", default=None, metavar="SAE_DIR",
                   help="other evaluated dictionaries to place on the report's L0/FVU plot")
    p.add_argument("--report-features", type=int, help="top-ranked features shown in the report (default 24)")
    p.add_argument("--device", help="torch device (default cpu)")
    p.add_argument("--config", help="YAML file of EvalConfig fields; flags and KEY=VALUE overrides win over it")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any EvalConfig field, e.g. --set progress=false (repeatable)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from visae.eval.config import load_eval_config
    from visae.eval.evaluate import evaluate

    flags = {name: getattr(args, name) for name in _FLAGS}
    flags["compare_to"] = args.compare_to
    if args.no_model:
        flags["model_passes"] = False
    results = evaluate(load_eval_config(args.config, flags, args.overrides))
    print(describe(results))
    return 0


def describe(results) -> str:
    s = results.summary
    lines = [
        f"FVU {s['fvu']:.4f}  L0 {s['l0']:.2f}  dead {s['dead_fraction']:.3f} of N={s['n_tokens']} tokens  "
        f"dense>10% {s['dense_10']:.3f}",
    ]
    down = s.get("downstream", {}).get("mean_over_heads", {})
    if "kl_sae" in down:
        lines.append(f"spliced KL sae {down['kl_sae']:.4g} / zero {down['kl_zero']:.4g} / mean {down['kl_mean']:.4g}, "
                     f"top-1 agreement {down['top1_sae']:.3f}")
    if "cosine_sae" in down:
        lines.append(f"spliced embedding cosine {down['cosine_sae']:.4f}")
    if s.get("coverage_0_9") is not None:
        lines.append(f"Coverage@0.9 {s['coverage_0_9']:.3f}")
    lines.append(f"report     {results.report_path}")
    return "\n".join(lines)
