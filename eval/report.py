"""The self-contained offline HTML report: every image is embedded as a base64 PNG, no external assets."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib import colormaps  # noqa: E402
from PIL import Image  # noqa: E402

from visae.eval.results import THUMBS_DIR  # noqa: E402

TILE = 96
SHOWN_EXAMPLES = 8
SUMMARY_ROWS = (("fvu", "FVU"), ("explained_variance", "explained variance"), ("mse", "MSE / element"),
                ("cosine", "mean cosine(x, x̂)"), ("rel_bias", "relative reconstruction bias"), ("l0", "L0"),
                ("dead_fraction", "dead fraction"), ("n_tokens", "N evaluation tokens"), ("dense_10", "dense > 10%"),
                ("dense_1", "dense > 1%"), ("coverage_0_9", "Coverage@0.9"),
                ("coverage_0_9_decodable", "Coverage@0.9 of the decodable values"), ("n_images", "images"))
TABLE_COLUMNS = ("rank", "feature", "score", "rank_label_free", "score_label_free", "moran_i", "freq", "max_act",
                 "purity", "top_label", "patch_purity",
                 "patch_top_label", "best_factor", "best_auroc", "seg_best_class", "seg_probe_r", "seg_purity_16",
                 "monosemanticity", "text_label", "effect_output", "effect_size", "hook_exclusive")
CSS = """body{font-family:system-ui,sans-serif;margin:24px;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:left}
.feature{border-top:2px solid #444;margin-top:18px;padding-top:6px}.muted{color:#666;font-size:12px}
img{image-rendering:pixelated;display:block;margin:4px 0}.defs{font-size:12px;color:#444}"""


def png_data_uri(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def figure_data_uri(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def overlay(thumb: Image.Image, heatmap: np.ndarray, scale: float) -> Image.Image:
    """The thumbnail with the latent's patch activations laid over it (inferno, opacity by activation)."""
    base = thumb.convert("RGB").resize((TILE, TILE), Image.Resampling.BICUBIC)
    norm = np.clip(heatmap.astype(np.float32) / scale, 0, 1) if scale > 0 else np.zeros_like(heatmap, np.float32)
    colours = (colormaps["inferno"](norm) * 255).astype(np.uint8)
    colours[..., 3] = (norm * 170).astype(np.uint8)
    layer = Image.fromarray(colours, "RGBA").resize((TILE, TILE), Image.Resampling.NEAREST)
    return Image.alpha_composite(base.convert("RGBA"), layer).convert("RGB")


def tile_strip(tiles: list[Image.Image]) -> Image.Image | None:
    """Tiles side by side with a 4-px white gap; None when there are none."""
    if not tiles:
        return None
    strip = Image.new("RGB", (len(tiles) * (TILE + 4) - 4, TILE), "white")
    for n, tile in enumerate(tiles):
        strip.paste(tile, (n * (TILE + 4), 0))
    return strip


def example_strip(folder: Path, images: np.ndarray, heatmaps: np.ndarray, scale: float) -> Image.Image | None:
    tiles = [overlay(Image.open(folder / THUMBS_DIR / f"{i}.png"), h, scale)
             for i, h in zip(images[:SHOWN_EXAMPLES], heatmaps[:SHOWN_EXAMPLES]) if i >= 0]
    return tile_strip(tiles)


def patch_strip(folder: Path, images: np.ndarray, positions: np.ndarray, grid: tuple[int, int]) -> Image.Image | None:
    """Each top patch outlined on its image."""
    from PIL import ImageDraw

    rows, cols = grid
    tiles = []
    for image, pos in zip(images[:SHOWN_EXAMPLES], positions[:SHOWN_EXAMPLES]):
        if image < 0:
            continue
        thumb = Image.open(folder / THUMBS_DIR / f"{image}.png").convert("RGB")
        tile = thumb.resize((TILE, TILE), Image.Resampling.BICUBIC)
        r, c = divmod(int(pos), cols)
        h, w = TILE / rows, TILE / cols
        ImageDraw.Draw(tile).rectangle([c * w, r * h, (c + 1) * w - 1, (r + 1) * h - 1], outline=(255, 220, 0), width=2)
        tiles.append(tile)
    return tile_strip(tiles)


def frequency_histogram(summary: dict) -> str:
    hist = summary["freq_hist"]
    edges, counts = np.asarray(hist["edges"]), np.asarray(hist["counts"])
    fig, ax = plt.subplots(figsize=(6, 2.6))
    ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color="#4c72b0")
    ax.set_xlabel("log10 firing frequency")
    ax.set_ylabel("latents")
    ax.set_title(f"live latents (dead: {summary['n_dead']} of {summary['d_sae']}, N = {summary['n_tokens']} tokens)")
    return figure_data_uri(fig)


def l0_fvu_plot(summary: dict, others: list[dict]) -> str:
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for other in others:
        ax.scatter(other["l0"], other["fvu"], color="#999")
        ax.annotate(other["name"], (other["l0"], other["fvu"]), fontsize=7, color="#666")
    ax.scatter(summary["l0"], summary["fvu"], color="#c44e52", s=60, label="this dictionary")
    ax.set_xscale("log")
    ax.set_xlabel("L0")
    ax.set_ylabel("FVU")
    ax.legend(fontsize=8)
    return figure_data_uri(fig)


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "–"
    if isinstance(value, (float, np.floating)):
        return f"{value:.4g}"
    return html.escape(str(value))


def _table(rows: list[tuple[str, object]]) -> str:
    return "<table>" + "".join(f"<tr><th>{html.escape(k)}</th><td>{_fmt(v)}</td></tr>" for k, v in rows) + "</table>"


def _downstream(summary: dict) -> str:
    """The spliced comparison: one table, or one per hook for a crosscoder (spliced at each hook in turn)."""
    per_hook = summary.get("downstream_per_hook")
    if per_hook:
        return "".join(f"<h3>spliced at {html.escape(hook)}</h3>{_downstream_table(down)}"
                       for hook, down in per_hook.items())
    down = summary.get("downstream")
    if not down:
        return "<p class=muted>model passes skipped</p>"
    where = f"<p>the prediction from {html.escape(summary['hook'])} replaces {html.escape(summary['out_hook'])}</p>" \
        if summary.get("out_hook") else ""
    return where + _downstream_table(down)


def _downstream_table(down: dict) -> str:
    heads = down["heads"]
    keys = sorted({k for s in heads.values() for k in s})
    head_rows = "".join(f"<tr><th>{html.escape(h)}</th>" + "".join(f"<td>{_fmt(s.get(k))}</td>" for k in keys) + "</tr>"
                        for h, s in heads.items())
    zero_shot = _table(list(down["zero_shot"].items())) if "zero_shot" in down else ""
    return (f"<p>{down['kind']} outputs, {down['n_images']} images</p><table><tr><th>head</th>"
            + "".join(f"<th>{html.escape(k)}</th>" for k in keys) + f"</tr>{head_rows}</table>{zero_shot}")


def _hooks(summary: dict) -> str:
    """A crosscoder's FVU per hook and where its latents live (docs/metrics.md, "Crosscoders")."""
    per_hook, profile = summary.get("per_hook"), summary.get("hook_profile")
    if not per_hook:
        return ""
    rows = "".join(f"<tr><th>{html.escape(hook)}</th><td>{_fmt(one['fvu'])}</td><td>{_fmt(one['mse'])}</td>"
                   f"<td>{_fmt(profile['exclusive_fraction'].get(hook) if profile else None)}</td></tr>"
                   for hook, one in per_hook.items())
    shared = _fmt(profile["shared_fraction"]) if profile else "–"
    return (f"<h2>Hooks</h2><table><tr><th>hook</th><th>FVU</th><th>MSE</th><th>exclusive latents</th></tr>{rows}"
            f"</table><p>shared by several hooks: {shared} of the latents that fired</p>")


def _factors(summary: dict) -> str:
    per_factor = summary.get("factor_auroc") or {}
    if not per_factor:
        return "<p class=muted>the source has no ground-truth factors</p>"
    rows = "".join(
        f"<tr><th>{html.escape(f)} ({summary['factor_level'].get(f, '')})</th><td>"
        + ", ".join(f"{html.escape(v)}: {_fmt(a)}" for v, a in values.items()) + "</td></tr>"
        for f, values in per_factor.items()
    )
    return (f"<p>Coverage@0.9 = {_fmt(summary.get('coverage_0_9'))} (best AUROC of any latent per value)</p>"
            f"<table>{rows}</table>{_probe_ceiling(summary)}{_ranking(summary)}")


def _probe_ceiling(summary: dict) -> str:
    """The linear probe's held-out AUROC per value beside the best latent's, and the coverage of what it decodes."""
    ceiling = summary.get("probe_ceiling")
    if not ceiling:
        return ""
    best = summary.get("factor_auroc") or {}
    rows = "".join(
        f"<tr><th>{html.escape(f)} ({c['level']})</th><td>"
        + ", ".join(f"{html.escape(v)}: {_fmt(a)} / {_fmt(best.get(f, {}).get(v))}"
                    for v, a in c["probe_auroc"].items())
        + "</td></tr>" for f, c in ceiling["per_factor"].items())
    missed = ", ".join(ceiling["missed"]) or "none"
    return (f"<p>Probe ceiling (linear probe on the raw activations, held-out AUROC / best latent AUROC): "
            f"{ceiling['n_decodable']} of {ceiling['n_values']} values decodable (probe AUROC ≥ 0.9); coverage of "
            f"the decodable values = {_fmt(ceiling['coverage_0_9_decodable'])}; decodable but missed: "
            f"{html.escape(missed)}</p><table>{rows}</table>")


def _ranking(summary: dict) -> str:
    check = summary.get("ranking")
    if not check:
        return ""
    return "<p>Ranking against the ground truth (share of detectors, best AUROC ≥ 0.9):</p>" + _table([
        (f"top {check['top']} by rank", check.get("rank_top_detector_share")),
        (f"top {check['top']} by rank_label_free", check.get("rank_label_free_top_detector_share")),
        ("base rate among live latents", check["base_rate_live"]),
        ("label-free enrichment (share / base rate)", check.get("rank_label_free_enrichment"))])


def _segmentation(summary: dict) -> str:
    seg = summary.get("segmentation")
    if not seg:
        return "<p class=muted>the store has no segmentation (patch labels of classes)</p>"
    figures = [(label, seg.get(key)) for key, label in (
        ("probe_r", "Probe R"), ("map", "mAP"), ("purity_16", "Purity@16"), ("purity_64", "Purity@64"),
        ("purity_256", "Purity@256"), ("coverage_0_3", "Coverage@0.3"), ("n_classes_measured", "classes measured"),
        ("n_train_patches", "training patches"), ("n_held_out_patches", "held-out patches"))]
    rows = "".join(f"<tr><th>{html.escape(name)}</th><td>{_fmt(c.get('ap'))}</td><td>{_fmt(c.get('probe_r'))}</td>"
                   f"<td>{_fmt(c.get('best_latent'))}</td></tr>" for name, c in seg["per_class"].items())
    return (f"<p>{html.escape(seg['split'])}; labels from the store's <code>{html.escape(seg['factor'])}</code> "
            f"patch labels</p>{_table(figures)}<table><tr><th>class</th><th>AP</th><th>Probe R</th>"
            f"<th>best latent</th></tr>{rows}</table>")


def _feature_block(folder: Path, row: dict, top: dict) -> str:
    j = int(row["feature"])
    scale = float(top["top_acts"][j][0]) or 1.0
    parts = []
    for title, key in (("top images", "top"), ("activation quantiles", "quantile")):
        strip = example_strip(folder, top[f"{key}_images"][j], top[f"{key}_heatmaps"][j], scale)
        acts = ", ".join(f"{a:.3g}" for i, a in zip(top[f"{key}_images"][j][:SHOWN_EXAMPLES],
                                                     top[f"{key}_acts"][j][:SHOWN_EXAMPLES]) if i >= 0)
        if strip is not None:
            parts.append(f"<div class=muted>{title} (activations {acts})</div><img alt='{title} of feature {j}' "
                         f"src='{png_data_uri(strip)}'>")
    if "top_patch_images" in top and top["top_heatmaps"].shape[2:] != (1, 1):
        strip = patch_strip(folder, top["top_patch_images"][j], top["top_patch_positions"][j],
                            top["top_heatmaps"].shape[2:])
        if strip is not None:
            parts.append(f"<div class=muted>top patches (outlined)</div><img alt='top patches of feature {j}' "
                         f"src='{png_data_uri(strip)}'>")
    labels = ", ".join(f"{k}: {_fmt(row.get(k))}" for k in TABLE_COLUMNS if k not in ("rank", "feature") and k in row)
    return (f"<div class=feature><b>#{row['rank']} — feature {j}</b> <span class=muted>{labels}</span>"
            + _effect(row) + "".join(parts) + "</div>")


def _effect(row: dict) -> str:
    """What the feature does: the output its ablation on its top images changes most (docs/metrics.md)."""
    output, size = row.get("effect_output"), row.get("effect_size")
    if not isinstance(output, str) or size is None or np.isnan(size):
        return ""
    if output == "embedding":
        change = f"moves the image embedding by 1 − cosine = {size:.3g}"
    else:
        change = f"{'lowers' if size < 0 else 'raises'} P({html.escape(output)}) by {abs(size):.3g}"
    return f"<div>What this feature does: switching it off on its top images {change}</div>"


def build_report(folder: Path, summary: dict, features: pd.DataFrame, top: dict, truth, others: list[dict],
                 n_features: int) -> str:
    """The report's HTML; `folder` holds the freshly written thumbs/."""
    ranked = features.sort_values("rank").head(n_features)
    columns = [c for c in TABLE_COLUMNS if c in ranked.columns]
    table = ("<table><tr>" + "".join(f"<th>{c}</th>" for c in columns) + "</tr>"
             + "".join("<tr>" + "".join(f"<td>{_fmt(r[c])}</td>" for c in columns) + "</tr>"
                       for r in ranked.to_dict("records")) + "</table>")
    blocks = "".join(_feature_block(folder, r, top) for r in ranked.to_dict("records"))
    superposition = summary.get("superposition")
    sup_html = ""
    if superposition:
        sup_html = "<h2>Neurons versus features</h2>" + _table(
            [(k, v) for k, v in superposition.items() if not isinstance(v, (dict, list))]
            + [(f"{basis}: {k}", v) for basis in ("neuron_basis", "sae_basis")
               for k, v in superposition.get(basis, {}).items()])
    defs = "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(str(v))}</li>"
                   for k, v in summary["metric_definitions"].items())
    hooks = ", ".join(summary.get("hooks") or [summary["hook"]])
    if summary.get("out_hook"):
        hooks += f" → {summary['out_hook']}"
    title = f"visae eval — {summary['model']} {hooks} ({summary['token_kind']} tokens)"
    kind = summary.get("kind", "sae")
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{CSS}</style></head><body>
<h1>{html.escape(title)}</h1>
<p class=muted>{summary['architecture']} ({kind}), {summary['d_sae']} latents;
store {html.escape(str(summary['store']))} (fingerprint {summary['store_fingerprint']}).
All metrics follow docs/metrics.md; definitions at the end.</p>
<h2>Summary</h2>{_table([(label, summary.get(key)) for key, label in SUMMARY_ROWS])}
{_hooks(summary)}
<h2>L0 / FVU against other dictionaries</h2><img alt="L0 vs FVU" src="{l0_fvu_plot(summary, others)}">
<h2>Firing frequency</h2><img alt="firing-frequency histogram" src="{frequency_histogram(summary)}">
<h2>Downstream (spliced into the forward pass)</h2>{_downstream(summary)}
<h2>Ground-truth factors</h2>{_factors(summary)}
<h2>Segmentation (saev's metrics)</h2>{_segmentation(summary)}
{sup_html}
<h2>Top {len(ranked)} features by rank</h2>{table}{blocks}
<h2>Metric definitions</h2><ul class=defs>{defs}</ul>
</body></html>"""
