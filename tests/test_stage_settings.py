"""Settings belong to their stage (issue #37): run_plan builds one frozen record per stage from the
validated configuration, and no other module indexes a configuration dictionary.

The AST check reads every top-level module but config.py (the user's file) and run_plan.py (which
builds the records) and refuses `cfg[...]`, `config[...]`, `settings[...]`, `x.cfg[...]` and their
`.get(...)`; a planted read is caught. The records cover config.py's keys exactly and give the
configuration back unchanged (what config_resolved.json and the results JSON record)."""
import ast
import dataclasses
import glob
import os

import pytest

from featrank import run_plan
from featrank import user_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMES = {"cfg", "config", "settings"}
ALLOWED = {"config.py", "run_plan.py", "user_config.py"}   # the settings and the plan


def _named(node) -> bool:
    """A configuration dictionary by its name: cfg, config, settings, or an attribute of that name."""
    return (isinstance(node, ast.Name) and node.id in NAMES) or \
        (isinstance(node, ast.Attribute) and node.attr in NAMES)


def reads(source: str) -> list[int]:
    """Line numbers of `source` that index a configuration dictionary or call its .get()."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Subscript) and _named(node.value):
            out.append(node.lineno)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr == "get" and _named(node.func.value):
            out.append(node.lineno)
    return sorted(out)


def test_no_module_below_the_plan_indexes_a_configuration_dictionary():
    found = {}
    for path in sorted(glob.glob(os.path.join(ROOT, "featrank", "*.py"))):
        name = os.path.basename(path)
        if name in ALLOWED:
            continue
        with open(path, encoding="utf-8") as f:
            lines = reads(f.read())
        if lines:
            found[name] = lines
    assert not found, f"configuration dictionaries indexed outside user_config.py and run_plan.py: {found}"


@pytest.mark.parametrize("planted", [
    "def f(cfg):\n    return cfg['seed']\n",
    "def f(config):\n    return config.get('seed', 0)\n",
    "class A:\n    def f(self):\n        return self.cfg['weights']\n",
    "def f(settings):\n    x = 1\n    return settings['kid']['degree']\n",
])
def test_a_planted_read_is_caught(planted):
    assert reads(planted), planted
    assert reads("def f(stages):\n    return stages.extraction.seed\n") == []


def test_the_records_hold_every_key_once_and_give_the_configuration_back():
    cfg = run_plan.with_degradation_sets(user_config.resolve_settings(run_plan.UserConfig.load(), {},
                                                                   "medium"))
    stages = run_plan.Stages.of(cfg)
    assert stages.config() == cfg
    keys = set()
    for f in dataclasses.fields(stages):
        record = getattr(stages, f.name)
        assert dataclasses.is_dataclass(record) and record.__dataclass_params__.frozen
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(record, dataclasses.fields(record)[0].name, None)
        keys |= set(run_plan.as_config(record))
    assert keys == set(user_config.CONFIG_KEYS)
