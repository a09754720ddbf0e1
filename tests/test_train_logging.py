"""What training reports: metrics fetched a window at a time, TensorBoard event files, a profiler
trace on request, log lines through `logging` with the process index."""

from __future__ import annotations

import io
import json
import logging
import os

from train_helpers import tiny_config

from jaxcot.logs import get_logger, setup_logging
from jaxcot.train import train


def _scalars(folder: str) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] from the TensorBoard event files in `folder`."""
    from tensorboardX.proto import event_pb2

    out: dict[str, list] = {}
    for name in sorted(os.listdir(folder)):
        data = open(os.path.join(folder, name), "rb").read()
        pos = 0
        while pos < len(data):  # TFRecord framing: length (8), crc (4), payload, crc (4)
            n = int.from_bytes(data[pos:pos + 8], "little")
            ev = event_pb2.Event.FromString(data[pos + 12:pos + 12 + n])
            pos += 12 + n + 4
            for v in ev.summary.value:
                out.setdefault(v.tag, []).append((ev.step, v.simple_value))
    return out


def test_metrics_every_n_steps_reach_jsonl_and_tensorboard(tmp_path):
    cfg = tiny_config(tmp_path, "tb", max_steps=7, epochs=None, log=dict(every=3, profile_from=2, profile_steps=2))
    res = train(cfg)
    assert res.status == "finished" and res.step == 7
    recs = [json.loads(line) for line in open(os.path.join(cfg.output_dir, "metrics.jsonl"))]
    assert [r["step"] for r in recs] == list(range(1, 8))  # every step recorded, fetched in windows of 3 (+1)
    # a window's steps share its measured step time
    assert recs[0]["step_s"] == recs[2]["step_s"] and recs[3]["step_s"] == recs[5]["step_s"]
    tb = _scalars(os.path.join(cfg.output_dir, "tensorboard"))
    assert [s for s, _ in tb["train/loss"]] == list(range(1, 8))
    assert [round(v, 4) for _, v in tb["train/loss"]] == [round(r["loss"], 4) for r in recs]
    assert {"train/lr", "train/grad_norm", "train/tokens_per_s"} <= tb.keys()
    traces = [f for _, _, fs in os.walk(os.path.join(cfg.output_dir, "profile")) for f in fs]
    assert any(f.endswith(".xplane.pb") for f in traces), traces


def test_tensorboard_off_and_resume_keeps_one_history(tmp_path):
    cfg = tiny_config(tmp_path, "off", max_steps=4, epochs=None, log=dict(every=2, tensorboard=False))
    train(cfg)
    assert not os.path.exists(os.path.join(cfg.output_dir, "tensorboard"))
    cfg = tiny_config(tmp_path, "resume", max_steps=6, epochs=None, checkpoint=dict(every=2), log=dict(every=4))
    assert train(cfg, stop_after=3).status == "stopped"  # saved at 3, with the metrics of steps 1-3 fetched
    train(cfg)
    tb = _scalars(os.path.join(cfg.output_dir, "tensorboard"))
    assert sorted({s for s, _ in tb["train/loss"]}) == list(range(1, 7))


def test_log_lines_carry_the_process_and_only_process_0_speaks(monkeypatch):
    stream = io.StringIO()
    setup_logging(stream=stream)
    try:
        get_logger("train").info("hello")
        assert stream.getvalue().rstrip().endswith("[jaxcot.train p0] hello")
        import jaxcot.logs

        monkeypatch.setattr(jaxcot.logs, "process_index", lambda: 1)
        get_logger("train").info("from process 1")
        assert "from process 1" not in stream.getvalue()
        setup_logging(stream=stream, all_processes=True)
        get_logger("train").info("from process 1, shown")
        assert "[jaxcot.train p1] from process 1, shown" in stream.getvalue()
    finally:
        logger = logging.getLogger("jaxcot")
        for h in list(logger.handlers):
            logger.removeHandler(h)


def test_lines_show_after_a_library_ran_basic_config():
    """absl (imported by orbax) runs `logging.basicConfig()` at WARNING on its first message: that
    must not silence jaxcot's INFO lines (a `jaxcot run` printed no stage line so)."""
    import subprocess
    import sys

    code = ("import logging; logging.basicConfig(); from jaxcot.logs import get_logger; "
            "get_logger('run').info('stage: running')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert "[jaxcot.run p0] stage: running" in out.stderr, out.stderr
    code = ("import logging, sys; "
            "logging.basicConfig(level=logging.INFO, stream=sys.stdout, format='MINE %(message)s'); "
            "from jaxcot.logs import get_logger; get_logger('run').info('x')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert "MINE x" in out.stdout and "[jaxcot" not in out.stderr  # a program's own INFO setup is kept


def test_tensorboard_writer_does_not_import_torch(tmp_path):
    """TensorBoard logging leaves torch unloaded (importing it is 1-2 s of `jaxcot train`'s
    start-up); the events are written, and torch imports as usual afterwards."""
    import subprocess
    import sys

    code = ("import sys\nfrom jaxcot.logs import tensorboard_writer\nw = tensorboard_writer(sys.argv[1])\n"
            "w.add_scalar('loss', 1.5, 1); w.close()\nassert 'torch' not in sys.modules\n"
            "import torch\nassert torch.tensor([1.0]).sum().item() == 1.0\n")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "tb")], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert _scalars(str(tmp_path / "tb")) == {"loss": [(1, 1.5)]}
