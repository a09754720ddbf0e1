"""Subprocess entry for the multi-process and preemption tests (not a test module).

    python tests/train_worker.py CONFIG.json [PROCESS_ID NUM_PROCESSES PORT]

Runs `train` on the TrainConfig in CONFIG.json, on 2 CPU devices per process; with a process id,
as one process of a `jax.distributed` job (gloo collectives, coordinator on 127.0.0.1:PORT).
Prints 'RESULT {json}' at the end.
"""

import json
import os
import sys

os.environ["JAX_PLATFORMS"] = "cpu"
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jaxcot.config import from_dict  # noqa: E402
from jaxcot.train import TrainConfig, train  # noqa: E402


def main(argv):
    with open(argv[1]) as f:
        cfg = json.load(f)
    if len(argv) > 2:
        pid, n, port = int(argv[2]), int(argv[3]), int(argv[4])
        cfg["distributed"] = dict(enabled=True, coordinator=f"127.0.0.1:{port}", num_processes=n, process_id=pid)
    res = train(from_dict(TrainConfig, cfg))
    print("RESULT " + json.dumps(dict(status=res.status, step=res.step, loss=res.loss)), flush=True)


if __name__ == "__main__":
    main(sys.argv)
