"""No process of a run outlives it (issue #45): after SIGKILL of the main process, during
extraction with DataLoader workers and during a sweep in loky workers, every process of its
session is gone within a few seconds."""
import os
import signal
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _session(sid: int) -> list[int]:
    """The live processes (not zombies) of session `sid`."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":          # fields[3]: session id
            out.append(int(pid))
    return out


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("stage, argv", [
    ("extraction", ["--build-cache", "--backbone", "resnet50", "--layers", "8", "--image-size", "224",
                    "--n-inference", "200"]),
    ("sweep", ["--mode", "medium", "--layers", "7", "8", "--jobs", "2", "--image-size", "32",
               "--n-inference", "40", "--n-evaluation", "8", "--no-baselines"]),
])
def test_sigkill_of_the_main_process_leaves_no_process_of_the_run(tmp_path, stage, argv):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    config = tmp_path / "config.py"                  # two DataLoader workers
    with open(os.path.join(ROOT, "config.py")) as f:
        config.write_text(f.read() + "\nCONFIG['num_workers'] = 2\n")
    p = subprocess.Popen([sys.executable, os.path.join(ROOT, "main.py"), "--config", str(config), *argv,
                          "--weights", "random",
                          "--cache-dir", str(tmp_path / "cache"), "--results-dir", str(tmp_path / "results")],
                         start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        deadline = time.time() + 240
        while len(_session(p.pid)) < 3 and time.time() < deadline and p.poll() is None:
            time.sleep(0.2)                  # the main process and at least two workers
        assert len(_session(p.pid)) >= 3, f"the {stage} never had two worker processes"
        time.sleep(1.0)
        p.send_signal(signal.SIGKILL)
        p.wait()
        end = time.time() + 3
        while _session(p.pid) and time.time() < end:
            time.sleep(0.1)
        left = _session(p.pid)
        names = []
        for pid in left:
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    names.append(f.read().replace(b"\0", b" ").decode(errors="replace")[-120:])
            except OSError:
                pass
        assert not left, f"after SIGKILL during the {stage}, {len(left)} process(es) of the run live on: {names}"
    finally:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
