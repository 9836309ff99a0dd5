"""`visae eval DICTIONARY`: measure a dictionary (reconstruction, sparsity, spliced downstream effect,
interpretability) and write DICTIONARY/eval: summary.json, features.parquet, top.safetensors, thumbs/ and a
self-contained report.html."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from omegaconf import MISSING
from tyro.conf import Positional, arg

from visae.eval.config import EvalConfig
from visae.service.cli import Command


@dataclass
class EvalArguments(EvalConfig):
    """EvalConfig with the dictionary given positionally."""

    sae_dir: Annotated[Positional[str], arg(metavar="DICTIONARY")] = MISSING
    """SAE folder to evaluate (cfg.json + sae_weights.safetensors)"""


def run(cfg: EvalArguments) -> int:
    from visae.eval.evaluate import evaluate

    print(describe(evaluate(cfg)))
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
    for hook, one in s.get("per_hook", {}).items():
        lines.append(f"  {hook}: FVU {one['fvu']:.4f}")
    for hook, down in s.get("downstream_per_hook", {}).items():
        mean = down.get("mean_over_heads", {})
        if "kl_sae" in mean:
            lines.append(f"  spliced at {hook}: KL sae {mean['kl_sae']:.4g} / zero {mean['kl_zero']:.4g}")
    if s.get("coverage_0_9") is not None:
        lines.append(f"Coverage@0.9 {s['coverage_0_9']:.3f}")
    lines.append(f"report     {results.report_path}")
    return "\n".join(lines)


COMMAND = Command(
    EvalArguments, run, help="evaluate a dictionary and write its feature table and HTML report",
    description="Evaluate a dictionary folder (SAE, transcoder or crosscoder) on an activation store holding every "
                "hook it reads (--store), or on a model and image source (--model with --images, harvested to a "
                "temporary store), and write DICTIONARY/eval. A transcoder is scored on its output hook and spliced in "
                "its place; a crosscoder per hook. Metrics follow docs/metrics.md; the summary figures are also "
                "written into the dictionary's cfg.json metadata.")
