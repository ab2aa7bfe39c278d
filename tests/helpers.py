"""Small, fast settings shared by the tests: tiny images, few levels."""
import copy

import config

TINY_DEGRADATIONS = {
    "blur": {"type": "gaussian_blur", "levels": [1.0, 3.0]},
    "noise": {"type": "gaussian_noise", "levels": [10, 40]},
}


def tiny_config(monkeypatch, **overrides):
    """Patch config.CONFIG for a fast run: 32-px working images, two degradations."""
    cfg = copy.deepcopy(config.CONFIG)
    cfg.update({"working_size": 32, "degradations": copy.deepcopy(TINY_DEGRADATIONS),
                "batch_size": 8, "num_workers": 0,
                "bootstrap": {"n_resamples": 20, "scope": "top", "confidence": 0.95}})
    cfg.update(overrides)
    monkeypatch.setattr(config, "CONFIG", cfg)
    return cfg


def tiny_args(tmp_path, *extra):
    return ["--cache-dir", str(tmp_path / "cache"), "--results-dir", str(tmp_path / "results"),
            "--image-size", "32", "--weights", "random", "-q", *extra]
