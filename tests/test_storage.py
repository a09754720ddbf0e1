"""Outputs on remote storage: the mirror's rules on fsspec's in-memory filesystem, training into
it, and a `jaxcot run` writing to and resuming from an FTP server on loopback (a non-local
filesystem reached over the network, as gs:// is)."""

import os
import socket
import subprocess
import sys
import threading

import fsspec
import pytest

from jaxcot import storage
from jaxcot.config import load_config
from jaxcot.train.config import TrainConfig
from jaxcot.train.loop import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def memfs(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXCOT_STAGING_DIR", str(tmp_path / "staging"))
    fs = fsspec.filesystem("memory")
    yield fs
    if fs.exists("/t"):
        fs.rm("/t", recursive=True)


def test_paths():
    assert storage.is_remote("gs://b/x") and storage.is_remote("memory://x") and storage.is_remote("s3://b")
    assert not storage.is_remote("runs/x") and not storage.is_remote("/abs/x") and not storage.is_remote("file:///x")
    assert storage.join("gs://b/runs/", "demo", "x.jsonl") == "gs://b/runs/demo/x.jsonl"
    assert storage.join("runs", "demo") == os.path.join("runs", "demo")
    assert storage.staging_dir("gs://b/r") == storage.staging_dir("gs://b/r/") != storage.staging_dir("gs://b/s")


def test_mirror_pulls_pushes_and_deletes(memfs):
    memfs.pipe("/t/run/a.txt", b"remote a")
    memfs.pipe("/t/run/sub/b.txt", b"remote b")
    memfs.pipe("/t/run/stale.lock", b"someone else's lock")
    with storage.local_folder("memory://t/run") as (local, remote):
        assert open(os.path.join(local, "a.txt")).read() == "remote a"
        assert open(os.path.join(local, "sub/b.txt")).read() == "remote b"
        assert not os.path.exists(os.path.join(local, "stale.lock"))  # locks never travel
        with open(os.path.join(local, "c.jsonl"), "w") as f:
            f.write("new\n")
        with open(os.path.join(local, "c.jsonl.lock"), "w") as f:
            f.write("1")
        os.makedirs(os.path.join(local, "ck.orbax-checkpoint-tmp-3"))
        with open(os.path.join(local, "ck.orbax-checkpoint-tmp-3", "x"), "w") as f:
            f.write("unfinished")
        os.unlink(os.path.join(local, "sub/b.txt"))
        assert remote.push() == 1  # c.jsonl only
        assert memfs.cat("/t/run/c.jsonl") == b"new\n"
        assert not memfs.exists("/t/run/sub/b.txt")  # removed by the stage, so removed remotely
        assert not memfs.exists("/t/run/c.jsonl.lock")
        assert remote.push() == 0  # nothing changed since
        with open(os.path.join(local, "a.txt"), "w") as f:
            f.write("changed a")
    assert memfs.cat("/t/run/a.txt") == b"changed a"  # pushed on the way out
    assert not any("orbax-checkpoint-tmp" in p for p in memfs.find("/t/run"))
    # The remote folder is the truth: a staging copy with extra files is made equal to it (its
    # locks and temporary files stay: a live writer on this machine may hold them).
    with open(os.path.join(storage.staging_dir("memory://t/run"), "extra.txt"), "w") as f:
        f.write("left by a killed run")
    with storage.local_folder("memory://t/run") as (local, _):
        kept = sorted(f for f in os.listdir(local) if not f.endswith(".lock") and "orbax-checkpoint-tmp" not in f)
        assert kept == ["a.txt", "c.jsonl", "sub"]


def test_pushed_even_when_the_block_raises(memfs):
    with pytest.raises(RuntimeError):
        with storage.local_folder("memory://t/r2") as (local, _):
            with open(os.path.join(local, "done.jsonl"), "w") as f:
                f.write("{}\n")
            raise RuntimeError("stage failed")
    assert memfs.cat("/t/r2/done.jsonl") == b"{}\n"


def test_local_file_mirrors_the_file_and_its_siblings_only(memfs):
    memfs.pipe("/t/out/x.jsonl.partial", b'{"id": 1}\n')
    memfs.pipe("/t/out/other.jsonl", b"not ours\n")
    with storage.local_file("memory://t/out/x.jsonl") as path:
        assert os.path.basename(path) == "x.jsonl"
        folder = os.path.dirname(path)
        assert sorted(os.listdir(folder)) == ["x.jsonl.partial"]
        os.replace(path + ".partial", path)
    assert memfs.cat("/t/out/x.jsonl") == b'{"id": 1}\n'
    assert not memfs.exists("/t/out/x.jsonl.partial") and memfs.exists("/t/out/other.jsonl")


def test_train_checkpoints_and_exports_to_remote_storage(memfs, monkeypatch):
    monkeypatch.chdir(ROOT)
    url = "memory://t/sft"
    cfg = load_config(TrainConfig, "configs/sft-lora-tiny.yaml",
                      [f"output_dir={url}", "max_steps=4", "epochs=null", "checkpoint.every=2", "progress=false",
                       "mesh.devices=1"])
    first = train(cfg, stop_after=2)
    assert first.status == "stopped"
    steps = {p.split("/checkpoints/")[1].split("/")[0] for p in memfs.find("/t/sft/checkpoints")}
    assert "2" in steps  # the checkpoint left the machine when it was saved
    monkeypatch.setenv("JAXCOT_STAGING_DIR", os.environ["JAXCOT_STAGING_DIR"] + "-elsewhere")  # another machine
    second = train(cfg)
    assert second.status == "finished" and second.step == 4
    assert memfs.exists("/t/sft/export/config.json") and memfs.exists("/t/sft/export-adapter/adapter_config.json")
    assert memfs.exists("/t/sft/metrics.jsonl")
    steps = {p.split("/checkpoints/")[1].split("/")[0] for p in memfs.find("/t/sft/checkpoints")}
    assert "4" in steps


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ftp_url(tmp_path):
    pyftpdlib = pytest.importorskip("pyftpdlib")  # noqa: F841  (a test extra)
    from pyftpdlib.authorizers import DummyAuthorizer
    from pyftpdlib.handlers import FTPHandler
    from pyftpdlib.servers import FTPServer

    home = tmp_path / "ftp"
    home.mkdir()
    auth = DummyAuthorizer()
    auth.add_user("jaxcot", "secret", str(home), perm="elradfmwMT")
    handler = type("Handler", (FTPHandler,), {"authorizer": auth, "banner": "test"})
    port = _free_port()
    server = FTPServer(("127.0.0.1", port), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"timeout": 0.1}, daemon=True)
    thread.start()
    yield f"ftp://jaxcot:secret@127.0.0.1:{port}", home
    server.close_all()


@pytest.mark.slow
def test_jaxcot_run_writes_and_resumes_on_a_remote_filesystem(tmp_path, ftp_url):
    url, home = ftp_url
    overrides = ["data.n_train=8", "data.n_test=4", "data.auc_samples=4", "generate.batch_size=8",
                 "score.batch_size=8", "methods=[{name: original, method: original}]"]

    def launch(stages, staging):
        env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu", JAXCOT_STAGING_DIR=str(tmp_path / staging),
                   JAXCOT_CACHE_DIR=str(tmp_path / "cache"))
        return subprocess.run([sys.executable, "-m", "jaxcot", "run", "--config", "configs/demo.yaml",
                               f"runs_dir={url}/runs", "name=tiny", "--stages", stages, *overrides],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)

    first = launch("data,generate", "machine-a")
    assert first.returncode == 0, first.stderr[-3000:]
    run = home / "runs" / "tiny"
    assert (run / "traces.jsonl").exists() and (run / "data" / "train.jsonl").exists()
    assert not list(run.rglob("*.lock"))
    traces = (run / "traces.jsonl").read_bytes()

    second = launch("data,generate,score", "machine-b")  # a fresh staging folder: it resumes from the server
    assert second.returncode == 0, second.stderr[-3000:]
    assert "generate: done, reusing" in second.stderr
    assert (run / "scored.jsonl").exists() and (run / "scored.jsonl.meta.json").exists()
    assert (run / "traces.jsonl").read_bytes() == traces


def test_a_commands_out_file_on_a_remote_filesystem(tmp_path, ftp_url):
    url, home = ftp_url
    env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu", JAXCOT_STAGING_DIR=str(tmp_path / "staging"))
    (home / "sets").mkdir()
    (home / "sets" / "other.jsonl").write_text("not this command's\n")
    done = subprocess.run([sys.executable, "-m", "jaxcot", "testbed", "data", "--n", "5", "--out",
                           f"{url}/sets/problems.jsonl"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = (home / "sets" / "problems.jsonl").read_text().splitlines()
    assert len(lines) == 5
    assert (home / "sets" / "other.jsonl").read_text() == "not this command's\n"
    assert not list((tmp_path / "staging").rglob("other.jsonl"))  # only the output and its siblings travel
