"""Subprocess entry for the multi-process and preemption tests (not a test module).

    python tests/train_worker.py CONFIG.json [PROCESS_ID NUM_PROCESSES PORT]

Runs `train` on the TrainConfig in CONFIG.json, on 2 CPU devices per process; with a process id,
as one process of a `jax.distributed` job (gloo collectives, coordinator on 127.0.0.1:PORT).
Prints 'RESULT {json}' at the end.
"""

import sys

from processes import report, worker_config, worker_setup

worker_setup(devices=2)

from jaxcot.config import from_dict  # noqa: E402
from jaxcot.train import TrainConfig, train  # noqa: E402


def main(argv):
    res = train(from_dict(TrainConfig, worker_config(argv[1], argv[2:5])))
    report(status=res.status, step=res.step, loss=res.loss)


if __name__ == "__main__":
    main(sys.argv)
