"""`visae` commands run in fresh processes (under torchrun for several ranks), for the training tests."""

import os
import subprocess
import sys
from pathlib import Path

# `visae train|sweep ...` through `visae.service.cli.main`, which imports only that command's module (the
# model zoo or the server cost tens of seconds per process on a busy CPU).
COMMAND = """import sys
from visae.service.cli import main
sys.exit(main(sys.argv[1:]))
"""


def visae_command(args: list[str], tmp_path: Path, nproc: int = 1, wait: bool = True):
    """Run `visae ARGS` in a fresh process (under torchrun with `nproc` > 1); returns the Popen."""
    script = tmp_path / "visae_command.py"
    script.write_text(COMMAND)
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo",
           "PYTHONPATH": ""}
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
                if nproc > 1 else [sys.executable])
    proc = subprocess.Popen([*launcher, str(script), *args], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    if wait:
        _, err = proc.communicate(timeout=400)
        assert proc.returncode == 0, err[-4000:]
    return proc


def flags(overrides: list[str]) -> list[str]:
    """`key=value` / `key=[a,b]` settings as the command's flags: `--key value` / `--key a b`."""
    args = []
    for override in overrides:
        key, _, value = override.partition("=")
        values = value[1:-1].split(",") if value.startswith("[") else [value]
        args += [f"--{key}", *values]
    return args
