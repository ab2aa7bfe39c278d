"""Small, fast settings shared by the tests: tiny images, few levels. Tests build their
settings as values (run_plan.UserConfig) and pass them on; none edits config.py's globals."""
import copy

from featrank import run_plan

TINY_DEGRADATIONS = {
    "blur": {"type": "gaussian_blur", "levels": [1.0, 3.0]},
    "noise": {"type": "gaussian_noise", "levels": [10, 40]},
}


# Which way each score points, written from the literature (never read from the code under test):
# +1 a distance or a loss, which grows as the evaluation images depart from the reference
# (FID, KID, CMMD, MMD, Mahalanobis, NLL, FD-inf, energy, sliced Wasserstein, the paired
# distances, LPIPS, DISTS); -1 a similarity or a fidelity, which falls (precision and recall of
# Kynkaanniemi et al., density and coverage of Naeem et al., the realism score, PSNR, SSIM,
# MS-SSIM). rho times this is "the score worsens as the images do".
WORSENS = {**dict.fromkeys(("fid", "kid", "cmmd", "mmd_rbf", "mahalanobis", "neg_loglik", "fd_inf",
                            "energy", "sliced_wasserstein", "paired_l2", "paired_cosine", "lpips",
                            "dists", "stlpips_vgg", "stlpips_alex"), 1),
           **dict.fromkeys(("precision", "recall", "density", "coverage", "realism", "psnr", "ssim",
                            "ms_ssim", "ssim_rgb", "ms_ssim_rgb"), -1)}


def tiny_config(**overrides) -> run_plan.UserConfig:
    """config.py's tables with a CONFIG for a fast run: 32-px working images, two degradations,
    no report.html (the tests of the report ask for it); pass it as cli.main(argv, user=...)."""
    return run_plan.UserConfig.load(**{
        "working_size": 32, "degradations": copy.deepcopy(TINY_DEGRADATIONS), "batch_size": 8,
        "num_workers": 0, "bootstrap": {"n_resamples": 20, "scope": "top", "confidence": 0.95},
        "report": False, **overrides})


def tiny_args(tmp_path, *extra):
    return ["--cache-dir", str(tmp_path / "cache"), "--results-dir", str(tmp_path / "results"),
            "--image-size", "32", "--weights", "random", "-q", *extra]


def write_images(folder, n=10, seed=0):
    """`n` random 36x36 PNGs in `folder`."""
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (36, 36, 3), dtype=np.uint8)).save(folder / f"im{i}.png")


def build_cache(tmp_path, *extra, layers=("8",), user=None):
    """`main.py --build-cache` of resnet50 `layers` on tmp_path/imgs, 5 + 3 images, with `user`
    (default: tiny_config())."""
    from featrank import cli
    return cli.main(tiny_args(tmp_path, "--build-cache", "--layers", *layers, "--dataset",
                               str(tmp_path / "imgs"), "--n-inference", "5", "--n-evaluation", "3",
                               *extra), user=user or tiny_config())


def cache_hits(caplog):
    """(CACHE HIT lines, CACHE MISS lines) of the log."""
    lines = [r.getMessage() for r in caplog.records]
    return ([x for x in lines if x.startswith("CACHE HIT")], [x for x in lines if x.startswith("CACHE MISS")])


def torch_hub_standin(torch_home, filename, state_dict):
    """Write `state_dict` as $TORCH_HOME/hub/checkpoints/`filename` (where torch.hub, torchvision
    and pytorch-fid look for weights); returns the path."""
    import torch
    path = torch_home / "hub" / "checkpoints" / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state_dict, path)
    return path


def readable_copy(base):
    """A copy of the project (main.py, config.py, the featrank package, tests/helpers.py) under
    `base`, readable by every user: a run as another user must not depend on the checkout's
    own folder being readable (a root home or mktemp -d folder is 0700). `python main.py` of
    the copy, or `python -c` run in it, imports the copy's package. Returns its path."""
    import os
    import shutil
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    dest = os.path.join(base, "project")
    os.makedirs(os.path.join(dest, "tests"))
    for name in ("main.py", "config.py"):
        shutil.copy(os.path.join(root, name), dest)
    shutil.copytree(os.path.join(root, "featrank"), os.path.join(dest, "featrank"),
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(os.path.join(root, "tests", "helpers.py"), os.path.join(dest, "tests"))
    for folder, dirs, files in os.walk(base):
        os.chmod(folder, 0o755)
        for f in files:
            os.chmod(os.path.join(folder, f), 0o644)
    return dest


def run_as_nobody(argv, base, timeout=300, cwd=None):
    """`python argv…` as user 65534 (setpriv) in `base` (a folder all may read), with HOME and
    the caches there; skips the test with the reason when that user cannot run this Python
    (setpriv missing, an interpreter it may not read). Returns the CompletedProcess."""
    import os
    import shutil
    import subprocess
    import sys
    import pytest
    if not shutil.which("setpriv"):
        pytest.skip("running as root without setpriv (util-linux): cannot drop privileges")
    drop = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    env = {**os.environ, "HOME": base, "XDG_CACHE_HOME": base, "TORCH_HOME": base, "MPLCONFIGDIR": base}
    probe = subprocess.run(drop + [sys.executable, "-c", "import numpy, torch"], cwd=base, env=env,
                           capture_output=True, text=True, timeout=timeout)
    if probe.returncode != 0:
        pytest.skip(f"user 65534 cannot run {sys.executable} with its packages here "
                    f"({probe.stderr.strip().splitlines()[-1:]})")
    return subprocess.run(drop + [sys.executable, *argv], cwd=cwd or base, env=env, capture_output=True,
                          text=True, timeout=timeout)
