"""The install resolves: jaxcot alone, with the `tpu` and with the `cuda` extra, on Python 3.11
and 3.12, with the tested constraints and without (`pip install --dry-run` against the index
for Linux x86-64 wheels, nothing installed)."""

import glob
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLATFORMS = ["manylinux2014_x86_64"] + [f"manylinux_2_{n}_x86_64" for n in (17, 24, 27, 28, 31, 34, 35)]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), ROOT], check=True,
                   capture_output=True)
    (path,) = glob.glob(str(out / "jaxcot-*.whl"))
    return path


def test_dry_runs_resolve(wheel, tmp_path):
    """The 12 installs (3 sets of extras x 2 Pythons x with and without constraints), resolved side by
    side (the resolver waits on the index, not the CPU)."""
    procs = {}
    for python in ("3.11", "3.12"):
        for extra in ("", "[tpu]", "[cuda]"):
            for constraints in (False, True):
                cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                       "--only-binary=:all:", "--python-version", python, "--implementation", "cp",
                       "--target", str(tmp_path / f"{python}{extra}{constraints}"), wheel + extra]
                for p in PLATFORMS:
                    cmd += ["--platform", p]
                if constraints:
                    cmd += ["-c", os.path.join(ROOT, "constraints.txt")]
                name = f"python {python}, jaxcot{extra}" + (", constraints.txt" if constraints else "")
                procs[name] = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    failed = {}
    for name, proc in procs.items():
        _, err = proc.communicate(timeout=900)
        errors = [line for line in err.splitlines() if "ERROR" in line]
        if proc.returncode != 0 or errors:
            failed[name] = err[-1500:]
    assert not failed, failed


def test_wheel_holds_the_package_data_and_installs(wheel, tmp_path):
    """The built wheel carries what the commands read at run time (the shipped teacher, the testbed
    scenarios, the TPU slice table) and installs by path as the README says (`pip install
    "jaxcot @ file://..."`); its console script answers --version and --help (no dependency needed
    for those: --no-deps keeps this test off the index)."""
    import zipfile

    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("jaxcot/assets/teacher/model.safetensors", "jaxcot/assets/teacher/tokenizer.json",
                   "jaxcot/assets/tpu_slices.tsv", "jaxcot/testbed/scenarios.yaml", "jaxcot/cli.py"):
        assert needed in names, needed
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    target = subprocess.run([str(venv / "bin" / "python"), "-c", purelib], check=True, capture_output=True,
                            text=True).stdout.strip()
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", target,
                    f"jaxcot @ file://{wheel}"], check=True)
    out = subprocess.run([str(venv / "bin" / "python"), "-m", "jaxcot", "--version"], capture_output=True, text=True,
                         env={"PATH": os.environ["PATH"]}, cwd=tmp_path)
    assert out.returncode == 0 and out.stdout.strip() == "jaxcot 0.1.0", out.stderr
    out = subprocess.run([str(venv / "bin" / "python"), "-m", "jaxcot", "--help"], capture_output=True, text=True,
                         env={"PATH": os.environ["PATH"]}, cwd=tmp_path)
    assert out.returncode == 0 and "eval" in out.stdout and "plan" in out.stdout, out.stderr
