"""Small, fast settings shared by the tests: tiny images, few levels. Tests build their
settings as values (run_plan.UserConfig) and pass them on; none edits config.py's globals."""
import copy

import run_plan

TINY_DEGRADATIONS = {
    "blur": {"type": "gaussian_blur", "levels": [1.0, 3.0]},
    "noise": {"type": "gaussian_noise", "levels": [10, 40]},
}


def tiny_config(**overrides) -> run_plan.UserConfig:
    """config.py's tables with a CONFIG for a fast run: 32-px working images, two degradations,
    no report.html (the tests of the report ask for it); pass it as main.main(argv, user=...)."""
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
    import main
    return main.main(tiny_args(tmp_path, "--build-cache", "--layers", *layers, "--dataset",
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
