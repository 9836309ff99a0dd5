import os

# Tests never talk to wandb's servers or a real Hub.
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
