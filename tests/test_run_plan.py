"""The run plan: config.py is read once into a UserConfig value; flags become settings there."""
import ast
import glob
import os
import runpy

import pytest

from featrank import cli
from featrank import run_plan
from featrank import user_config
from featrank.errors import ConfigError, UsageError
from helpers import tiny_args, tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GLOBALS = {"CONFIG", "QUICK", "ENABLED_LAYERS", "MODES"}
CONFIG_PY = os.path.join(ROOT, "config.py")


def test_config_py_ships_exactly_the_known_keys():
    """The unknown-key check compares with this list, not with the edited CONFIG itself."""
    assert tuple(runpy.run_path(CONFIG_PY)["CONFIG"]) == user_config.CONFIG_KEYS


def test_a_key_added_to_config_is_unknown(tmp_path, capsys):
    user = tiny_config(n_images_inferense=10)           # a typo, as added to config.py's CONFIG
    assert cli.main(tiny_args(tmp_path), user=user) == 2
    err = capsys.readouterr().err.strip()
    assert "n_images_inferense" in err and "valid keys" in err and len(err.splitlines()) == 1
    with pytest.raises(ConfigError, match="missing"):
        run_plan.validate_config({k: v for k, v in tiny_config().config.items() if k != "seed"})



def test_a_section_missing_from_config_is_one_line_not_a_traceback(tmp_path, capsys):
    """The parser's help shows CONFIG's defaults; a section the user deleted from config.py
    (here 'bootstrap', whose n_resamples --n-resamples shows) is reported, not a KeyError."""
    user = tiny_config()
    del user.config["bootstrap"]
    assert cli.main(tiny_args(tmp_path), user=user) == 2
    err = capsys.readouterr().err.strip()
    assert "bootstrap" in err and "missing" in err and len(err.splitlines()) == 1

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
    paths = [p for pattern in ("*.py", "featrank/*.py", "tests/*.py", "bench/*.py", "examples/*.py")
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
    shipped = runpy.run_path(CONFIG_PY)
    assert shipped["CONFIG"]["seed"] == 0 and shipped["CONFIG"]["degradations"]
    assert shipped["ENABLED_LAYERS"]["resnet50"][7] is True
    assert run_plan.UserConfig.load() == run_plan.UserConfig.load()


def test_resolve_settings_names_the_flag_or_the_key():
    user = tiny_config()
    cfg = user_config.resolve_settings(user, {"bootstrap.n_resamples": 5, "n_images_inference": 9},
                                    "medium")
    assert cfg["bootstrap"] == {**user.config["bootstrap"], "n_resamples": 5}
    assert cfg["n_images_inference"] == 9
    assert cfg["n_images_evaluation"] == user.modes["medium"]["n_images_evaluation"]
    assert user.config["bootstrap"]["n_resamples"] == 20          # the UserConfig is unchanged
    with pytest.raises(UsageError, match=r"^--batch-size 0 is not valid"):
        user_config.resolve_settings(user, {"batch_size": 0}, "quick", {"batch_size": "--batch-size"})
    with pytest.raises(UsageError, match=r"^batch_size 0 is not valid"):
        user_config.resolve_settings(user, {"batch_size": 0}, "quick")
    with pytest.raises(UsageError, match="mode 'fast'"):
        user_config.resolve_settings(user, {}, "fast")


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


# Every flag of user_config.SETTING_FLAGS: a value typed, the setting it must set and the value it
# must become there. A flag added to the table without a row here fails the first assert.
FLAG_SAMPLES = {
    "--backbone": ("vgg19", "backbone", "vgg19"), "--weights": ("random", "weights", "random"),
    "--image-size": ("64", "image_size", 64), "--dataset": ("photos", "dataset", "photos"),
    "--mos": ("ratings.csv", "mos", "ratings.csv"), "--rank-by": ("monotonicity", "rank_by", "monotonicity"),
    "--mos-bins": ("5", "mos_bins", 5),
    "--mos-orientation": ("lower-better", "mos_orientation", "lower-better"),
    "--n-inference": ("9", "n_images_inference", 9), "--n-evaluation": ("7", "n_images_evaluation", 7),
    "--degradations": ("seed, fid", "degradation_sets", ["seed", "fid"]), "--seed": ("5", "seed", 5),
    "--device": ("cpu", "device", "cpu"), "--jobs": ("2", "jobs", 2),
    "--dask-scheduler": ("tcp://h:8786", "dask_scheduler", "tcp://h:8786"),
    "--batch-size": ("3", "batch_size", 3), "--cache-dir": ("c", "cache_dir", "c"),
    "--results-dir": ("r", "results_dir", "r"), "--n-resamples": ("11", "bootstrap.n_resamples", 11),
    "--bootstrap-all": (None, "bootstrap.scope", "all"), "--no-baselines": (None, "baselines", []),
}


NEEDS = {"--mos-bins": ["--mos", "ratings.csv"], "--mos-orientation": ["--mos", "ratings.csv"]}


def test_every_setting_flag_sets_its_setting_and_only_it():
    """Each flag, parsed by main.py's parser, changes its own setting of the resolved CONFIG to
    the value typed and no other setting, and reports that setting as set by a flag."""
    assert {f.flag for f in user_config.SETTING_FLAGS} == set(FLAG_SAMPLES)
    user = tiny_config()
    parse = cli.build_parser(user.config, user.modes).parse_args
    for flag, (typed, setting, want) in FLAG_SAMPLES.items():
        context = NEEDS.get(flag, [])          # a flag that means something only beside another
        base = cli.settings(parse(context), user)[0]
        argv = context + ([flag] if typed is None else [flag, typed])
        cfg, given = cli.settings(parse(argv), user)
        section, _, key = setting.partition(".")
        assert (cfg[section][key] if key else cfg[section]) == want, flag
        assert given == {setting} | ({"mos"} if context else set()), flag
        assert {k for k in cfg if cfg[k] != base[k]} == {section}, flag
        if key:
            assert {k for k in cfg[section] if cfg[section][k] != base[section][k]} == {key}, flag


def test_a_flag_out_of_range_is_named_as_typed():
    user = tiny_config()
    for flag, value in (("--n-inference", "1"), ("--seed", "-1"), ("--jobs", "0"),
                        ("--image-size", "8"), ("--dask-scheduler", " ")):
        args = cli.build_parser(user.config, user.modes).parse_args([flag, value])
        with pytest.raises(UsageError, match=rf"^{flag} .* is not valid: it must be "):
            cli.settings(args, user)


def test_a_function_over_60_lines_says_why_and_how_long():
    """Every function of the top-level modules is at most 60 lines, or its docstring gives the
    reason with its length ('N lines'), kept true as the function changes."""
    too_long = {}
    for path in glob.glob(os.path.join(ROOT, "featrank", "*.py")):
        for node in ast.walk(ast.parse(open(path).read())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > 60 and f"{length} lines" not in (ast.get_docstring(node) or ""):
                    too_long[f"{os.path.basename(path)}:{node.name}"] = length
    assert too_long == {}


def test_a_config_file_is_read_by_path_and_checked_for_its_four_tables(tmp_path):
    """UserConfig.load(path) runs the file (never imports it: no `config` module appears), and
    a missing file or a missing table is one ConfigError naming the file and the table."""
    import sys
    with pytest.raises(ConfigError, match=r"no such file.*config\.py"):
        run_plan.UserConfig.load(tmp_path / "nope.py")
    partial = tmp_path / "partial.py"
    partial.write_text("CONFIG = {}\nQUICK = {}\nMODES = {}\n")
    with pytest.raises(ConfigError, match="ENABLED_LAYERS"):
        run_plan.UserConfig.load(partial)
    mine = tmp_path / "mine.py"
    with open(CONFIG_PY) as f:
        mine.write_text(f.read().replace('"seed": 0,', '"seed": 11,'))
    before = set(sys.modules)
    assert run_plan.UserConfig.load(mine).config["seed"] == 11
    assert run_plan.UserConfig.load().config["seed"] == 0
    assert "config" not in set(sys.modules) - before
