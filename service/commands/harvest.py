"""`visae harvest`: write a model's activations at some hook points into an activation store."""

from __future__ import annotations

from visae.activation_store.harvest_config import HarvestConfig
from visae.activation_store.store import ActivationStore
from visae.service.cli import Command


def run(cfg: HarvestConfig) -> int:
    from visae.activation_store.harvester import harvest  # imports the model libraries, only when harvesting

    print(describe(harvest(cfg)))
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


COMMAND = Command(
    HarvestConfig, run, help="harvest activations into a Zarr store",
    description="Harvest a vision model's activations at several hook points into a Zarr activation store "
                "(local path or s3://bucket/path). Rerunning the same command resumes an interrupted harvest. "
                "Under `torchrun --nproc_per_node=N` the ranks share the work.")
