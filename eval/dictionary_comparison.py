"""Comparing two saved dictionaries (the `visae compare` command): seeds, widths or layers."""

from __future__ import annotations

import json
from pathlib import Path

from visae.core.atomic import write_atomic
from visae.eval.decoder_similarity import COMPARE_DEFINITION, cosine_matrix, feature_splitting, hungarian, mmcs
from visae.eval.writer import json_ready
from visae.sae import SAE


def compare_dictionaries(a: str | Path, b: str | Path, split_threshold: float = 0.5, out: str | None = None) -> dict:
    """Summary figures plus full matching; with `out`, the full result is written there as JSON (atomically)."""
    sae_a, sae_b = SAE.load(a), SAE.load(b)
    cos = cosine_matrix(sae_a.W_dec, sae_b.W_dec)
    match = hungarian(cos)
    summary = {
        "a": {"path": str(a), "d_sae": sae_a.cfg.d_sae, "hook": sae_a.cfg.metadata.get("hook_name")},
        "b": {"path": str(b), "d_sae": sae_b.cfg.d_sae, "hook": sae_b.cfg.metadata.get("hook_name")},
        "mmcs_a_to_b": mmcs(cos),
        "mmcs_b_to_a": mmcs(cos.T),
        "hungarian_mean_cos": match["mean_cos"],
        "hungarian_frac_above_0_9": match["frac_above_0_9"],
        "hungarian_frac_above_0_7": match["frac_above_0_7"],
        "definition": COMPARE_DEFINITION,
    }
    full = {"summary": summary, "matching": {"a": match["rows"], "b": match["cols"], "cos": match["cos"]}}
    if sae_a.cfg.d_sae != sae_b.cfg.d_sae:
        narrow_is_a = sae_a.cfg.d_sae < sae_b.cfg.d_sae
        split = feature_splitting(cos if narrow_is_a else cos.T, split_threshold)
        summary["splitting"] = {
            "narrow": "a" if narrow_is_a else "b",
            "threshold": split_threshold,
            "mean_children_per_narrow_latent": split["mean_children"],
            "frac_narrow_latents_split": split["frac_split"],
            "mean_parent_cos": float(split["parent_cos"].mean()),
        }
        full["splitting"] = {"parent_of_wide": split["parent"], "parent_cos": split["parent_cos"],
                             "children_of_narrow": split["children"]}
    if out is not None:
        write_atomic(out, json.dumps(json_ready(full)))
    return json_ready(full)
