"""The same run on one device, on 8 simulated devices (data x fsdp x tensor = 2x2x2), and on two
processes over loopback (jax.distributed with gloo CPU collectives, each process feeding its own
rows of every global batch through grain) ends with the same parameters (float32, <= 1e-5)."""

import json
import os
import sys

import numpy as np
import pytest
import safetensors.numpy
from processes import free_port, run_all
from train_helpers import max_diff, model_params, tiny_config

from jaxcot.config import to_dict
from jaxcot.models.params import hf_state_dict
from jaxcot.train import train

HERE = os.path.dirname(os.path.abspath(__file__))
COMMON = dict(n_examples=24, max_steps=3, batch_size=8, grad_accum=2, data=dict(packing=True),
              optim=dict(lr=3e-3), checkpoint=dict(every=2, keep=2))


def losses(run_dir):
    return [json.loads(line)["loss"] for line in open(os.path.join(run_dir, "metrics.jsonl"))]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One process, one device: 3 steps of full fine-tuning (packing, 2 micro-batches)."""
    tmp = tmp_path_factory.mktemp("mesh")
    res = train(tiny_config(tmp, "single", **COMMON))
    assert res.status == "finished" and res.step == 3
    return tmp, res


def test_mesh_2x2x2_equals_single_device(reference):
    tmp, one = reference
    cfg = tiny_config(tmp, "eight", **{**COMMON, "checkpoint": dict(enabled=False)},
                      mesh=dict(devices=0, data=2, fsdp=2, tensor=2))
    eight = train(cfg)
    kernel = eight.model.layers[0].self_attn.q_proj.kernel[...]
    assert len(kernel.sharding.device_set) == 8 and not kernel.sharding.is_fully_replicated
    np.testing.assert_allclose(losses(cfg.output_dir), losses(one.output_dir), rtol=1e-6)
    d = max_diff(model_params(one.model), model_params(eight.model))
    assert d <= 1e-5, d


def test_two_processes_equal_one(reference):
    tmp, one = reference
    # 2 processes x 2 devices: data=2 across the processes, fsdp=2 inside each
    cfg = tiny_config(tmp, "multi", **COMMON, export=True, mesh=dict(devices=0, data=2, fsdp=2, tensor=1))
    cfg_path = tmp / "multi.json"
    cfg_path.write_text(json.dumps(to_dict(cfg)))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    cmds = [[sys.executable, os.path.join(HERE, "train_worker.py"), str(cfg_path), str(i), "2", str(port)]
            for i in range(2)]
    for out in run_all(cmds, env=env, timeout=180):
        assert '"status": "finished", "step": 3' in out, out[-3000:]
    # the checkpoint was written jointly: one grain iterator state per process
    data_dir = os.path.join(cfg.output_dir, "checkpoints", "3", "data")
    states_on_disk = sorted(f for f in os.listdir(data_dir) if f.endswith(".json"))
    assert states_on_disk == ["process_0-of-2.json", "process_1-of-2.json"]
    states = [json.load(open(os.path.join(data_dir, f"process_{i}-of-2.json"))) for i in range(2)]
    assert states[0] == states[1] == {"next_index": 3}

    want = {k: np.asarray(v) for k, v in hf_state_dict(one.model).items()}
    got = safetensors.numpy.load_file(os.path.join(cfg.output_dir, "export", "model.safetensors"))
    assert got.keys() == want.keys()
    diff = max(float(np.abs(got[k] - want[k]).max()) for k in want)
    assert diff <= 1e-5, diff
    np.testing.assert_allclose(losses(cfg.output_dir), losses(one.output_dir), rtol=1e-5)
