"""Subprocess entry for the multi-process GRPO test (not a test module).

    python tests/grpo_worker.py CONFIG.json QUESTIONS.json PROCESS_ID NUM_PROCESSES PORT

Runs `grpo` on the GRPOConfig in CONFIG.json and the {id, question, gold} records in
QUESTIONS.json, on one CPU device, as one process of a `jax.distributed` job (gloo collectives,
coordinator on 127.0.0.1:PORT). Prints 'RESULT {json}' at the end: the status, the step, and how
many completions this process sampled.
"""

import json
import os
import sys

os.environ["JAX_PLATFORMS"] = "cpu"
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jaxcot.config import from_dict  # noqa: E402
from jaxcot.generate import Generator  # noqa: E402
from jaxcot.rl import GRPOConfig, grpo  # noqa: E402


def main(argv):
    with open(argv[1]) as f:
        cfg = json.load(f)
    with open(argv[2]) as f:
        questions = json.load(f)
    pid, n, port = int(argv[3]), int(argv[4]), int(argv[5])
    cfg["distributed"] = dict(enabled=True, coordinator=f"127.0.0.1:{port}", num_processes=n, process_id=pid)
    sampled = []
    generate_ids = Generator.generate_ids

    def counted(self, prompts, **kw):
        sampled.append(len(prompts))
        return generate_ids(self, prompts, **kw)

    Generator.generate_ids = counted
    res = grpo(from_dict(GRPOConfig, cfg), questions=questions, handle_sigterm=False)
    print("RESULT " + json.dumps(dict(status=res.status, step=res.step, sampled=sum(sampled))), flush=True)


if __name__ == "__main__":
    main(sys.argv)
