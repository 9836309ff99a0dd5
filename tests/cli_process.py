"""`visae` commands run in fresh processes (under torchrun for several ranks), for the training tests."""

import os
import subprocess
import sys
from pathlib import Path

# `visae train|sweep ...` with only that sub-command registered: the full CLI imports every command's
# module (the model zoo, the server), which costs tens of seconds per process on a busy CPU.
COMMAND = """import argparse, importlib, sys
parser = argparse.ArgumentParser(prog="visae")
importlib.import_module("visae.service.commands." + sys.argv[1]).register(parser.add_subparsers())
args = parser.parse_args(sys.argv[1:])
sys.exit(args.func(args) or 0)
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

