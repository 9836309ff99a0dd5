"""`python -m visae ...` and `torchrun ... -m visae ...` run the `visae` command."""

import sys

from visae.service.cli import main

sys.exit(main())
