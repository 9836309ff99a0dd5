"""Converters from other libraries' SAE files to visae SAEs, with a record of the conversion in metadata.

Foreign checkpoints are read with `torch.load(weights_only=True)` only; a file that needs full
unpickling is refused with the reason.
"""

from visae.sae.converters.convert_file import convert_file, sniff_format
from visae.sae.converters.prisma import convert_prisma
from visae.sae.converters.saev import convert_saev

__all__ = ["convert_file", "convert_prisma", "convert_saev", "sniff_format"]
