"""`evaluate(cfg)`: measure a dictionary on an activation store and write SAE_DIR/eval (the layout in
docs/dictionary-formats.md).

Stages: (1) one streaming pass over the store's activations (reconstruction, sparsity, sparse codes);
(2) per-latent interpretability off the codes (top/quantile images, heatmaps, purity, factor AUROC);
(3) forward passes of the real model (spliced downstream effect, reference embeddings for monosemanticity);
(4) neuron-versus-feature comparison for mlp_hidden hooks; (5) the feature table, ranking and report.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from visae.activation_store.layout import TokenLayout
from visae.activation_store.models import Preprocess, load_model
from visae.activation_store.sources import open_source
from visae.activation_store.store import ActivationStore
from visae.activation_store.verify import check_store
from visae.core.devices import resolve_device
from visae.core.reconstruction import FVU_DEFINITION, HookStats
from visae.eval.auroc import AUROC_DEFINITION
from visae.eval.codes import CodeCollector, Codes, sparse_shape
from visae.eval.config import EvalConfig
from visae.eval.dictionary_hooks import DictionaryHooks, canonical_or_same
from visae.eval.downstream import DOWNSTREAM_DEFINITION
from visae.eval.feature_effects import EFFECT_DEFINITION, feature_effects
from visae.eval.hook_profile import hook_profile_columns
from visae.eval.interpretability import GroundTruth, factor_auroc, image_factor_auroc, label_purity, patch_purity
from visae.eval.interventions import reconstructs_its_hook
from visae.eval.labels import PURITY_DEFINITION
from visae.eval.model_pass import final_embedding_hook, run_model_pass
from visae.eval.monosemanticity import MS_DEFINITION, baseline_ms, monosemanticity_scores
from visae.eval.neurons import NEURON_DEFINITION, neuron_hook, neuron_loadings
from visae.eval.output_reader import OutputReader
from visae.eval.probe_ceiling import PROBE_CEILING_DEFINITION, ProbeData, decodable_coverage, probe_ceiling
from visae.eval.ranking import SCORE_DEFINITION, add_score_and_rank
from visae.eval.ranking_validation import ranking_validation
from visae.eval.report import build_report
from visae.eval.results import EvalResults
from visae.eval.segmentation_metrics import SEGMENTATION_DEFINITION, Segmentation, segmentation_scores
from visae.eval.sparsity import SPARSITY_DEFINITION, FiringStats
from visae.eval.spatial_coherence import MORAN_DEFINITION, moran_i
from visae.eval.text_labels import load_vocabulary, text_embeddings, text_labels
from visae.eval.writer import thumbnail, update_cfg_metadata, write_results
from visae.sae import SAE


@dataclass
class Target:
    """What the dictionary reads and reconstructs: its hooks, their token kind, and where those tokens sit in the
    store and the model."""

    hooks: DictionaryHooks  # canonical
    token_kind: str
    store_tokens: list[int]  # positions of the dictionary's tokens among the store's kept tokens
    layout: TokenLayout  # layout of the dictionary's tokens

    @property
    def hook(self) -> str:
        """The (first) hook the latents are computed from."""
        return self.hooks.hook

    @classmethod
    def resolve(cls, meta: dict, hooks: DictionaryHooks, store: ActivationStore) -> Target:
        kind = meta.get("token_kind") or store.token_kind
        try:
            tokens = store.layout.indices(kind)
        except ValueError as err:
            raise ValueError(f"the SAE was trained on {kind!r} tokens but the store kept {store.token_kind!r}: {err}")
        return cls(hooks=hooks, token_kind=kind, store_tokens=tokens, layout=store.layout.subset(kind))

    def read(self, store: ActivationStore, hooks: tuple[str, ...], start: int, stop: int) -> torch.Tensor:
        """The dictionary's tokens of images start..stop-1 at `hooks`, side by side: [images, tokens, sum of d]."""
        index = torch.as_tensor(self.store_tokens)
        return torch.cat([torch.from_numpy(store.read(hook, start, stop))[:, index] for hook in hooks], dim=-1)


class SourceImages:
    """Evaluated store images, read back from the store's image source (a folder, Parquet rows, tar shards: nothing
    is extracted) at their source index, and checked against the id the store recorded for them."""

    def __init__(self, store: ActivationStore, n_images: int, preprocess: Preprocess):
        try:
            self.source = open_source(store.source_spec)
        except (OSError, ValueError) as err:
            raise FileNotFoundError(f"the images of {store.path} cannot be read back: its image source "
                                    f"{store.source_spec} is gone ({err}); restore it there to evaluate") from None
        self.index = np.asarray(store.source_index[:n_images])
        self.ids = np.asarray(store.image_ids[:n_images])
        self.preprocess = preprocess
        self.n = n_images

    def image(self, i: int):
        record = self.source[int(self.index[i])]
        if record.id != self.ids[i]:
            raise ValueError(f"image {i} of the store is {self.ids[i]}, but {self.source.spec} now holds {record.id} "
                             "there: the source changed since the harvest; harvest it again")
        if record.image is None:
            raise ValueError(f"image {record.id} of {self.source.spec} cannot be read any more ({record.error})")
        return record.image

    def __call__(self, start: int, stop: int) -> torch.Tensor:
        return self.preprocess.batch([self.image(i) for i in range(start, stop)])

    def thumb(self, i: int):
        return thumbnail(self.preprocess.resize_crop(self.image(i)))


def evaluate(cfg: EvalConfig) -> EvalResults:
    cfg = replace(cfg, device=str(resolve_device(cfg.device)))  # `auto` -> this rank's GPU, or the CPU
    sae_dir = Path(cfg.sae_dir)
    if not (sae_dir / "cfg.json").is_file():
        raise FileNotFoundError(f"no SAE at {sae_dir} (cfg.json missing); pass a folder written by `visae train`")
    sae = SAE.load(sae_dir, device=cfg.device).eval().requires_grad_(False)
    meta = json.loads((sae_dir / "cfg.json").read_text()).get("metadata", {})
    with _store_for(cfg, sae, meta) as store:
        if not store.complete:
            raise ValueError(f"the store at {store.path} is incomplete; finish it with `visae harvest` (it resumes)")
        check_store(store)
        hooks = _dictionary_hooks(cfg, sae, meta, store)
        mismatches = dictionary_store_mismatches(cfg, meta, hooks, store)
        model = _load_matching_model(cfg, store) if cfg.model_passes else None
        target = Target.resolve(meta, hooks, store)
        n_images = min(store.n_images, cfg.max_images or store.n_images)
        store_label = cfg.store or f"{cfg.images} through {cfg.model} (harvested to a temporary store)"
        return _evaluate(cfg, sae_dir, sae, store, store_label, model, target, n_images, mismatches)


def _dictionary_hooks(cfg: EvalConfig, sae: SAE, meta: dict, store: ActivationStore) -> DictionaryHooks:
    """The dictionary's hooks, canonical; an SAE that names none reads the store's only hook."""
    hook = cfg.hook
    if hook is None and not meta.get("hook_name") and type(sae).traits.kind == "sae":
        if len(store.hooks) != 1:
            raise ValueError(f"the SAE names no hook_name and the store holds {store.hooks}; pass --hook")
        hook = store.hooks[0]
    return DictionaryHooks.of(sae, meta, hook).canonical(int(store.attrs["model"].get("n_blocks") or 0))


def dictionary_store_mismatches(cfg: EvalConfig, meta: dict, hooks: DictionaryHooks,
                                store: ActivationStore) -> list[str]:
    """How the store differs from what the dictionary was trained on (its cfg.json metadata): model spec,
    weights hash, hook, token kind, width d. Raises unless `cfg.allow_mismatch` (then the list is recorded in
    the eval summary); a store lacking any hook the dictionary reads or predicts, or of another width at one, is
    always refused, as the dictionary cannot be evaluated there."""
    model = store.attrs["model"]
    found = []
    if meta.get("model_name") and meta["model_name"] != store.model_spec:
        found.append(f"model: the dictionary was trained on {meta['model_name']}, the store holds {store.model_spec}")
    for key, store_key in (("model_state_sha256", "state_sha256"), ("model_weights_sha256", "weights_sha256")):
        if meta.get(key) and model.get(store_key) and meta[key] != model[store_key]:
            found.append(f"weights: the dictionary's model weights hash {str(meta[key])[:12]}... differs from the "
                         f"store's {str(model[store_key])[:12]}... ({store_key})")
            break
    trained = meta.get("hook_name")
    if cfg.hook and trained and canonical_or_same(trained, int(model.get("n_blocks") or 0)) != hooks.hook:
        found.append(f"hook: the dictionary was trained on {trained}, --hook asks for {cfg.hook}")
    kind = meta.get("token_kind")
    if kind and store.token_kind not in (kind, "all"):
        found.append(f"token kind: the dictionary was trained on {kind!r} tokens, the store kept {store.token_kind!r}")
    missing = [hook for hook in hooks.all if hook not in store.hooks]
    if missing:
        raise ValueError(f"the dictionary at {cfg.sae_dir} ({hooks.kind}) cannot be evaluated on the store at "
                         f"{store.path}: " + "; ".join(f"hook: the dictionary was trained on {hook}, the store holds "
                                                       f"{', '.join(store.hooks)}" for hook in missing)
                         + (f"; {'; '.join(found)}" if found else "")
                         + ". Harvest those hooks with the dictionary's model (visae harvest --hooks ...)"
                         + (" or pass --hook" if hooks.kind == "sae" else ""))
    for hook in hooks.all:
        if store.d(hook) != hooks.widths[hook]:
            width = "d_in" if hook in hooks.reads else "d_out"
            raise ValueError(f"the dictionary at {cfg.sae_dir} reads {width}={hooks.widths[hook]} activations at "
                             f"{hook}, but {hook} in the store at {store.path} has d={store.d(hook)}; evaluate it on a "
                             "store of the model it was trained on" + (f" ({'; '.join(found)})" if found else ""))
    if found and not cfg.allow_mismatch:
        raise ValueError(f"the dictionary at {cfg.sae_dir} does not match the store at {store.path}: "
                         f"{'; '.join(found)}. Evaluate it on a store harvested like its training store, or pass "
                         "--allow-mismatch for a deliberate cross-model study (recorded in eval/summary.json)")
    return found


def _load_matching_model(cfg: EvalConfig, store: ActivationStore):
    """The store's model, refusing weights other than the ones it was harvested with (downstream would be void)."""
    model = load_model(store.model_spec, weights=cfg.weights, device=cfg.device)
    harvested = store.attrs["model"].get("weights_sha256")
    if harvested is not None and model.weights_sha256 != harvested:
        raise ValueError(f"the store was harvested from {store.model_spec} with weights sha256 {harvested[:12]}..., "
                         f"but these weights are {str(model.weights_sha256)[:12]}...; pass the same file with "
                         "--weights (or --no-model to skip the model passes)")
    return model


@contextlib.contextmanager
def _store_for(cfg: EvalConfig, sae: SAE, meta: dict):
    """The store named by --store, or a temporary one harvested from --model/--images at every hook the dictionary
    needs."""
    if cfg.store is not None:
        yield ActivationStore.open(cfg.store)
        return
    from visae.activation_store.harvest_config import HarvestConfig
    from visae.activation_store.harvester import harvest

    hooks = DictionaryHooks.of(sae, meta, cfg.hook).all
    if cfg.model is None or cfg.images is None:  # EvalConfig already refuses a config naming neither
        raise ValueError("say what to evaluate on: --store STORE, or --model SPEC with --images SOURCE")
    with tempfile.TemporaryDirectory(prefix="visae-eval-store-") as tmp:
        yield harvest(HarvestConfig(out=str(Path(tmp) / "store.zarr"), model=cfg.model, images=cfg.images,
                                    hooks=hooks, weights=cfg.weights, tokens=meta.get("token_kind") or "all",
                                    n_images=cfg.max_images, batch_size=cfg.batch_images, device=cfg.device,
                                    progress=cfg.progress))


def _evaluate(cfg, sae_dir, sae, store, store_label: str, model, target: Target, n_images: int,
              mismatches: list[str] | None = None) -> EvalResults:
    t0 = time.perf_counter()
    recon, per_hook, firing, codes = _store_pass(cfg, sae, store, target, n_images)
    store_seconds = time.perf_counter() - t0
    truth = GroundTruth.from_store(store, n_images)
    preprocess = model.preprocess if model is not None else Preprocess.from_dict(store.attrs["preprocess"])
    images = SourceImages(store, n_images, preprocess)

    columns, top, referenced = _per_latent(cfg, codes, truth, firing)
    matches = factor_auroc(codes, truth)
    columns.update(matches.per_latent())
    if codes.layout.patch_indices:
        columns["moran_i"] = moran_i(codes.tokens.tocsr()[codes.patch_rows()], codes.grid)
    segmentation = _segmentation(cfg, codes, store, n_images, columns)
    summary = {
        "model": store.model_spec, "hook": target.hook, **_hook_fields(target.hooks), "token_kind": target.token_kind,
        "store": store_label, "store_fingerprint": store.fingerprint, "n_images": n_images,
        "d_sae": int(sae.cfg.d_sae), "architecture": sae.cfg.architecture,
        **recon.result(), **firing.result(), **matches.summary(),
        "throughput": {"store_tokens_per_s": firing.n_tokens / store_seconds},
    }
    if per_hook:
        summary["per_hook"] = per_hook
    if target.hooks.kind == "crosscoder":
        profile, summary["hook_profile"] = hook_profile_columns(sae, target.hooks.writes, firing.frequency() > 0)
        columns.update(profile)
    if segmentation is not None:
        summary["segmentation"] = segmentation
    if truth.factors and cfg.probe_rows:
        summary["probe_ceiling"] = _probe_ceiling(cfg, store, target, n_images, truth, summary["factor_auroc"])
        summary["coverage_0_9_decodable"] = summary["probe_ceiling"]["coverage_0_9_decodable"]
    if mismatches:
        summary["allowed_mismatch"] = list(mismatches)  # evaluated with --allow-mismatch despite these
    if truth.factors:
        image_level = image_factor_auroc(codes, truth).summary()
        summary["image_level"] = {"coverage_0_9": image_level["coverage_0_9"],
                                  "factor_auroc": image_level["factor_auroc"],
                                  "note": "every factor at image level: the latent's max over every token vs the "
                                          "image's (primary object's) factor value"}
    columns["monosemanticity"] = np.full(sae.cfg.d_sae, np.nan)
    columns["text_label"] = [None] * sae.cfg.d_sae
    if model is not None:
        clip = callable(getattr(model, "encode_text", None))
        class_emb = None
        if clip and truth.label_names and (truth.labels >= 0).any():
            class_emb = torch.from_numpy(text_embeddings(model, truth.label_names))
        passes = run_model_pass(model, sae, target.hooks, target.token_kind, recon.mean.float(), images,
                                cfg.downstream_images, cfg.batch_images, cfg.progress, truth.labels, class_emb)
        if target.hooks.kind == "crosscoder":
            summary["downstream_per_hook"] = passes.downstream
        else:
            summary["downstream"] = passes.downstream[target.hooks.writes[0]]
        summary["throughput"]["images_per_s"] = passes.images_per_s
        columns["monosemanticity"] = monosemanticity_scores(codes.images, passes.embeddings)
        summary["ms_baseline"] = baseline_ms(passes.embeddings)
        if clip and passes.outputs is not None:
            concepts = load_vocabulary(cfg.vocabulary, truth.label_names)
            columns["text_label"], columns["text_label_cos"] = text_labels(
                codes.images, passes.outputs, text_embeddings(model, concepts), concepts)
        summary["reference_encoder"] = f"{store.model_spec} final CLS embedding ({final_embedding_hook(model)})"
    neurons = neuron_hook(target.hooks)
    if neurons is not None:
        summary["superposition"] = _neurons_vs_features(cfg, sae, store, target, neurons, codes, truth, columns)
    features = add_score_and_rank(pd.DataFrame({"feature": np.arange(sae.cfg.d_sae), **columns}),
                                  ms_baseline=summary.get("ms_baseline", 0.0))
    summary["ranking"] = ranking_validation(features)
    if model is not None and cfg.effect_latents and reconstructs_its_hook(sae):
        features = _with_effects(cfg, sae, model, target, features, top, images, truth)
    summary["metric_definitions"] = _definitions(summary.get("reference_encoder", "none (model passes skipped)"))
    summary["n_scored"] = int(features["score"].notna().to_numpy().sum())
    thumbs = {i: images.thumb(i) for i in tqdm(sorted(referenced), desc="thumbnails", disable=not cfg.progress)}
    others = _other_dictionaries(cfg.compare_to)
    write_results(sae_dir, summary, features, top, thumbs,
                  lambda folder: build_report(folder, summary, features, top, truth, others, cfg.report_features))
    update_cfg_metadata(sae_dir, summary)
    return EvalResults.load(sae_dir)


def _hook_fields(hooks: DictionaryHooks) -> dict:
    """What the summary records of the hooks beyond `hook` (the one the latents are computed from)."""
    if hooks.kind == "transcoder":
        return {"kind": hooks.kind, "out_hook": hooks.writes[0]}
    if hooks.kind == "crosscoder":
        return {"kind": hooks.kind, "hooks": list(hooks.reads)}
    return {"kind": hooks.kind}


def _store_pass(cfg, sae, store, target: Target, n_images: int):
    """Reconstruction statistics of everything the dictionary reconstructs (and of each hook, when it reconstructs
    several), firing statistics and the sparse codes, in one pass over the store."""
    hooks = target.hooks
    stats = HookStats(sae.hook_slices(), device=cfg.device)
    firing = FiringStats(d_sae=sae.cfg.d_sae)
    collector = CodeCollector(sae.cfg.d_sae, target.layout)
    bar = tqdm(total=n_images * len(target.store_tokens), desc="encoding", unit="tok", unit_scale=True,
               disable=not cfg.progress)
    with torch.no_grad(), bar:
        for start in range(0, n_images, cfg.batch_images):
            stop = min(start + cfg.batch_images, n_images)
            x = target.read(store, hooks.reads, start, stop).to(cfg.device)
            flat = x.reshape(-1, x.shape[-1])
            truth = flat if hooks.writes == hooks.reads else target.read(store, hooks.writes, start, stop).to(
                cfg.device).reshape(flat.shape[0], -1)
            x_hat, z = sae.forward_with_latents(flat)
            stats.update(truth, x_hat)
            firing.update(z)
            collector.update(z.reshape(x.shape[0], x.shape[1], -1).cpu())
            bar.update(flat.shape[0])
    per_hook = {hook: one.result() for hook, one in zip(hooks.writes, stats.per_hook)}
    return stats.total, per_hook, firing, collector.finish()


def _per_latent(cfg, codes: Codes, truth: GroundTruth, firing: FiringStats):
    """Feature-table columns, the top.safetensors arrays, and every image index they reference."""
    top_images, top_acts = codes.top_images(cfg.top_k)
    q_images, q_acts = codes.quantile_images(cfg.n_quantiles)
    patch_image, patch_pos, patch_acts = codes.top_patches(cfg.top_k)
    freq = firing.frequency()
    columns = {
        "freq": freq,
        "log10_freq": np.where(freq > 0, np.log10(np.clip(freq, 1e-300, None)), np.nan),
        "max_act": firing.act_max.numpy(),
        "mean_act": firing.mean_act_when_firing(),
        "n_images_fired": np.diff(codes.images.indptr),
        **label_purity(top_images, truth),
    }
    if truth.patch_labels and codes.layout.patch_indices:
        columns.update(patch_purity(patch_image, patch_pos, truth))
    top = {
        "top_images": top_images, "top_acts": top_acts, "top_heatmaps": codes.heatmaps(top_images),
        "quantile_images": q_images, "quantile_acts": q_acts, "quantile_heatmaps": codes.heatmaps(q_images),
        "top_patch_images": patch_image, "top_patch_positions": patch_pos, "top_patch_acts": patch_acts,
    }
    referenced = set(np.unique(np.concatenate([top_images.ravel(), q_images.ravel(), patch_image.ravel()])).tolist())
    referenced -= {-1}
    return columns, top, referenced


def _with_effects(cfg, sae, model, target: Target, features: pd.DataFrame, top: dict, images: SourceImages,
                  truth: GroundTruth) -> pd.DataFrame:
    """The feature table with `effect_output` / `effect_size` of the --effect-latents top-ranked latents."""
    latents = features.sort_values("rank", kind="stable")["feature"].head(cfg.effect_latents).tolist()
    clip = callable(getattr(model, "encode_text", None))
    reader = OutputReader(model, load_vocabulary(cfg.vocabulary, truth.label_names) if clip else None)
    columns = feature_effects(model, sae, target.hook, model.layout.indices(target.token_kind), latents,
                              top["top_images"], lambda rows: images.preprocess.batch([images.image(i) for i in rows]),
                              reader, cfg.batch_images, cfg.progress)
    return features.assign(**columns)


def _segmentation(cfg, codes: Codes, store: ActivationStore, n_images: int, columns: dict) -> dict | None:
    """saev's metrics against the store's segmentation, when it has one and the SAE reads the patch tokens; the
    per-latent figures go into `columns`."""
    seg = Segmentation.from_store(store, n_images)
    if seg is None or not codes.layout.patch_indices:
        return None
    scores = segmentation_scores(codes.tokens.tocsr()[codes.patch_rows()], seg, cfg.device)
    columns.update(scores.columns)
    return scores.summary


def _probe_ceiling(cfg, store: ActivationStore, target: Target, n_images: int, truth: GroundTruth,
                   latent_auroc: dict) -> dict:
    """Linear probes on the raw activations the dictionary reads (every hook's, side by side) of the first evaluated
    images (at most `cfg.probe_rows` rows)."""
    patches = list(target.layout.patch_indices)
    n = min(n_images, max(2, cfg.probe_rows // max(len(patches), 1)))
    data = ProbeData.read(lambda start, stop: target.read(store, target.hooks.reads, start, stop).numpy(), n, patches,
                          target.layout.cls_index)
    ceiling = probe_ceiling(data, truth.factors, truth.patch_labels, truth.factor_values)
    return {**decodable_coverage(ceiling, latent_auroc), "n_images": n, "per_factor": ceiling}


def _neurons_vs_features(cfg, sae, store, target: Target, neurons: str, codes: Codes, truth: GroundTruth,
                         columns: dict) -> dict:
    """Polysemanticity in the neuron basis (raw activations at the MLP hidden layer `neurons`) vs the dictionary's
    latents, same images and scores; for an SAE reading `neurons` itself, also how its decoder rows load on them."""
    if neurons not in store.hooks:
        return {"note": f"the store holds no {neurons}, the MLP's hidden layer; harvest it beside the dictionary's "
                        "hooks to compare the latents with the MLP's neurons", "definition": NEURON_DEFINITION}
    n = min(cfg.neuron_images, codes.n_images)
    collector = CodeCollector(store.d(neurons), target.layout)
    for start in tqdm(range(0, n, cfg.batch_images), desc="neuron basis", disable=not cfg.progress):
        collector.update(target.read(store, (neurons,), start, min(start + cfg.batch_images, n)))
    subset_truth = GroundTruth(truth.labels[:n], truth.label_names, {k: v[:n] for k, v in truth.factors.items()},
                               truth.factor_values, {k: v[:n] for k, v in truth.patch_labels.items()})
    sae_subset = Codes(codes.tokens.tocsr()[: n * target.layout.n_tokens].tocsc(), codes.images.tocsr()[:n].tocsc(),
                       codes.layout, codes.images_all_tokens.tocsr()[:n].tocsc())
    result = {"neuron_hook": neurons, "n_images": n,
              "neuron_basis": _basis_scores(collector.finish(), subset_truth, cfg.top_k),
              "sae_basis": _basis_scores(sae_subset, subset_truth, cfg.top_k), "definition": NEURON_DEFINITION}
    if target.hook != neurons:  # a transcoder: its decoder writes the MLP's output, not the neurons
        return result
    loadings = neuron_loadings(sae.W_dec)
    columns["neurons_per_latent"] = loadings.pop("neurons_per_latent")
    latents_per_neuron = loadings.pop("latents_per_neuron")
    return {**loadings, "latents_per_neuron_quantiles": np.quantile(latents_per_neuron, [0.1, 0.5, 0.9]).tolist(),
            **result}


def _basis_scores(codes: Codes, truth: GroundTruth, k: int) -> dict:
    top_images, _ = codes.top_images(k)
    purity = label_purity(top_images, truth)["purity"]
    matches = factor_auroc(codes, truth)
    best = matches.per_latent()["best_auroc"]
    return {
        "n_units": int(sparse_shape(codes.tokens)[1]),
        "mean_purity": float(np.nanmean(purity)) if np.isfinite(purity).any() else None,
        "mean_best_auroc": float(np.nanmean(best)) if np.isfinite(best).any() else None,
        "coverage_0_9": matches.summary()["coverage_0_9"],
    }


def _other_dictionaries(dirs: list[str]) -> list[dict]:
    """Name, L0 and FVU of other evaluated dictionaries (their eval summary, else their cfg.json metadata)."""
    out = []
    for d in dirs:
        path = Path(d)
        if EvalResults.exists(path):
            s = EvalResults.load(path).summary
        elif (path / "cfg.json").is_file():
            s = json.loads((path / "cfg.json").read_text()).get("metadata", {}).get("eval", {})
        else:
            raise FileNotFoundError(f"--compare-to {d}: no SAE folder there (cfg.json missing)")
        if s.get("l0") is None or s.get("fvu") is None:
            raise ValueError(f"--compare-to {d}: that dictionary has not been evaluated yet; "
                             f"run `visae eval {d}` first")
        out.append({"name": path.name, "l0": s["l0"], "fvu": s["fvu"]})
    return out


def _definitions(reference_encoder: str) -> dict:
    return {
        "note": "All metrics follow docs/metrics.md.",
        "reconstruction": FVU_DEFINITION,
        "sparsity": SPARSITY_DEFINITION,
        "downstream": DOWNSTREAM_DEFINITION,
        "purity": PURITY_DEFINITION,
        "auroc": AUROC_DEFINITION,
        "monosemanticity": MS_DEFINITION.format(encoder=reference_encoder),
        "score": SCORE_DEFINITION,
        "segmentation": SEGMENTATION_DEFINITION,
        "probe_ceiling": PROBE_CEILING_DEFINITION,
        "spatial_coherence": MORAN_DEFINITION,
        "effects": EFFECT_DEFINITION,
    }
