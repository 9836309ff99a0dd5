"""visae: sparse autoencoders for vision models.

The pipeline's layers are sub-packages, each importable on its own (importing `visae` loads none of them):
`visae.core` (shared plumbing) -> `visae.activation_store` / `visae.sae` -> `visae.training` / `visae.eval`
-> `visae.service`. A lower layer never imports a higher one (docs/architecture.md).
"""

__version__ = "0.2.0"
