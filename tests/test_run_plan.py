"""The run plan: config.py is read once into a UserConfig value; flags become settings there."""
import ast
import glob
import os

import pytest

import config
import main
import run_plan
from errors import ConfigError, UsageError
from helpers import tiny_args, tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GLOBALS = {"CONFIG", "QUICK", "ENABLED_LAYERS", "MODES"}


def test_config_py_ships_exactly_the_known_keys():
    """The unknown-key check compares with this list, not with the edited CONFIG itself."""
    assert tuple(config.CONFIG) == run_plan.CONFIG_KEYS


def test_a_key_added_to_config_is_unknown(tmp_path, capsys):
    user = tiny_config(n_images_inferense=10)           # a typo, as added to config.py's CONFIG
    assert main.main(tiny_args(tmp_path), user=user) == 2
    err = capsys.readouterr().err.strip()
    assert "n_images_inferense" in err and "valid keys" in err and len(err.splitlines()) == 1
    with pytest.raises(ConfigError, match="missing"):
        run_plan.validate_config({k: v for k, v in tiny_config().config.items() if k != "seed"})


def _identifiers(path):
    names = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, ast.Attribute):
            names.add(node.attr)
        elif isinstance(node, ast.alias):
            names.add(node.name)
    return names


def test_only_config_and_the_planning_module_read_config_globals():
    """Code (not prose) of every module, test and bench: config.py's globals are read in
    run_plan.UserConfig.load alone; tests build UserConfig values and never patch config.py."""
    paths = [p for pattern in ("*.py", "tests/*.py", "bench/*.py", "examples/*.py")
             for p in glob.glob(os.path.join(ROOT, pattern))]
    offenders = {os.path.relpath(p, ROOT): sorted(_identifiers(p) & GLOBALS) for p in paths
                 if os.path.basename(p) not in ("config.py", "run_plan.py", "test_run_plan.py")}
    assert {p: n for p, n in offenders.items() if n} == {}
    patched = [os.path.relpath(p, ROOT) for p in paths if os.path.basename(p) != "test_run_plan.py"
               and any(f"{verb}(config" in open(p).read() for verb in ("setattr", "setitem"))]
    assert patched == []


def test_user_config_load_is_a_copy():
    user = run_plan.UserConfig.load(seed=7)
    user.config["degradations"].clear()
    user.enabled_layers["resnet50"][7] = False
    assert config.CONFIG["seed"] == 0 and config.CONFIG["degradations"]
    assert config.ENABLED_LAYERS["resnet50"][7] is True
    assert run_plan.UserConfig.load() == run_plan.UserConfig.load()


def test_resolve_settings_names_the_flag_or_the_key():
    user = tiny_config()
    cfg = run_plan.resolve_settings(user, {"bootstrap.n_resamples": 5, "n_images_inference": 9},
                                    "medium")
    assert cfg["bootstrap"] == {**user.config["bootstrap"], "n_resamples": 5}
    assert cfg["n_images_inference"] == 9
    assert cfg["n_images_evaluation"] == user.modes["medium"]["n_images_evaluation"]
    assert user.config["bootstrap"]["n_resamples"] == 20          # the UserConfig is unchanged
    with pytest.raises(UsageError, match=r"^--batch-size 0 is not valid"):
        run_plan.resolve_settings(user, {"batch_size": 0}, "quick", {"batch_size": "--batch-size"})
    with pytest.raises(UsageError, match=r"^batch_size 0 is not valid"):
        run_plan.resolve_settings(user, {"batch_size": 0}, "quick")
    with pytest.raises(UsageError, match="mode 'fast'"):
        run_plan.resolve_settings(user, {}, "fast")


def test_quick_and_enabled_layers_come_from_the_user_config():
    user = tiny_config()
    user.enabled_layers["resnet50"] = {i: i == 9 for i in range(16)}
    user = user.replace(quick={**user.quick, "layers": {**user.quick["layers"], "resnet50": [6]}})
    cfg = {**user.config, "image_size": 32, "weights": "random"}
    medium = run_plan.make_plan(cfg, "medium", user=user)
    quick = run_plan.make_plan(cfg, "quick", user=user)
    (_, (lc,)), = medium.backbones
    (_, (qlc,)), = quick.backbones
    assert lc.paths == ["avgpool"] and qlc.paths == ["layer3.1"]
    assert medium.enabled_layers == user.enabled_layers
