"""Subprocess entry for the multi-process GRPO test (not a test module).

    python tests/grpo_worker.py CONFIG.json QUESTIONS.json PROCESS_ID NUM_PROCESSES PORT

Runs `grpo` on the GRPOConfig in CONFIG.json and the {id, question, gold} records in
QUESTIONS.json, on one CPU device, as one process of a `jax.distributed` job (gloo collectives,
coordinator on 127.0.0.1:PORT). Prints 'RESULT {json}' at the end: the status, the step, and how
many completions this process sampled.
"""

import json
import sys

from processes import report, worker_config, worker_setup

worker_setup(devices=1)

from jaxcot.config import from_dict  # noqa: E402
from jaxcot.generate import Generator  # noqa: E402
from jaxcot.rl import GRPOConfig, grpo  # noqa: E402


def main(argv):
    cfg = worker_config(argv[1], argv[3:6])
    with open(argv[2]) as f:
        questions = json.load(f)
    sampled = []
    generate_ids = Generator.generate_ids

    def counted(self, prompts, **kw):
        sampled.append(len(prompts))
        return generate_ids(self, prompts, **kw)

    Generator.generate_ids = counted
    res = grpo(from_dict(GRPOConfig, cfg), questions=questions, handle_sigterm=False)
    report(status=res.status, step=res.step, sampled=sum(sampled))


if __name__ == "__main__":
    main(sys.argv)
