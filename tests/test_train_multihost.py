"""Multi-host for real: two processes on loopback (jax.distributed, gloo CPU collectives), each
feeding its own rows of every global batch through grain, end with the same parameters as one
process on the same global batches."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import safetensors.numpy

from jaxcot.config import to_dict
from jaxcot.models.params import hf_state_dict
from jaxcot.train import train
from train_helpers import tiny_config

HERE = os.path.dirname(os.path.abspath(__file__))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_equal_one(tmp_path):
    common = dict(n_examples=24, max_steps=3, batch_size=8, grad_accum=2, export=True,
                  checkpoint=dict(every=2, keep=2), optim=dict(lr=3e-3))
    # 2 processes x 2 devices: data=2 across the processes, fsdp=2 inside each
    cfg = tiny_config(tmp_path, "multi", mesh=dict(devices=0, data=2, fsdp=2, tensor=1), **common)
    cfg_path = tmp_path / "multi.json"
    cfg_path.write_text(json.dumps(to_dict(cfg)))
    port = free_port()
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    procs = [
        subprocess.Popen([sys.executable, os.path.join(HERE, "train_worker.py"), str(cfg_path), str(i), "2", str(port)],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for i in range(2)
    ]
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=180)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-3000:]
        assert '"status": "finished", "step": 3' in out, out[-3000:]
    # checkpoint written jointly: one grain iterator state per process
    data_dir = os.path.join(cfg.output_dir, "checkpoints", "3", "data")
    assert sorted(f for f in os.listdir(data_dir) if f.endswith(".json")) == ["process_0-of-2.json", "process_1-of-2.json"]

    single = train(tiny_config(tmp_path, "single", **common))
    want = {k: np.asarray(v) for k, v in hf_state_dict(single.model).items()}
    got = safetensors.numpy.load_file(os.path.join(cfg.output_dir, "export", "model.safetensors"))
    assert got.keys() == want.keys()
    diff = max(float(np.abs(got[k] - want[k]).max()) for k in want)
    assert diff <= 1e-5, diff
    losses = [json.loads(line)["loss"] for line in open(os.path.join(cfg.output_dir, "metrics.jsonl"))]
    np.testing.assert_allclose(losses[-1], single.loss, rtol=1e-5)
