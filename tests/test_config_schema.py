"""The whole config.py checked when it is read (issue #45): a property test builds variants of
the shipped file from the schema of its tables (featrank/config_schema.py), each key absent,
each container of the wrong type, each value of a wrong type, a list with a duplicate, and
asserts exit 2 with one line naming the table and the key as config.py writes them."""
import os
import re

import pytest

from featrank import cli, config_schema
from featrank.user_config import UserConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = UserConfig.load(os.path.join(ROOT, "config.py"))
TABLES = {"MODES": SHIPPED.modes, "QUICK": SHIPPED.quick, "ENABLED_LAYERS": SHIPPED.enabled_layers}
CASES = [(table, path, kind, broken) for table, node in config_schema.SCHEMA.items()
         for path, kind, broken in config_schema.variants(node, table, TABLES[table])]


def _run(tmp_path, capsys, tail: str):
    """main.py --mode quick with the shipped config.py plus `tail`: exit code and stderr lines."""
    with open(os.path.join(ROOT, "config.py")) as f:
        text = f.read()
    path = tmp_path / "config.py"
    path.write_text(text + "\n" + tail + "\n")
    capsys.readouterr()
    rc = cli.main(["--config", str(path), "--mode", "quick", "--results-dir", str(tmp_path / "results"),
                   "--cache-dir", str(tmp_path / "cache")])
    err = capsys.readouterr().err.strip().splitlines()
    assert not (tmp_path / "results").exists() and not (tmp_path / "cache").exists()
    return rc, err


def test_the_schema_yields_every_kind_of_variant():
    kinds = {k for _, _, k, _ in CASES}
    assert kinds == {"absent", "container", "type", "duplicate"} and len(CASES) > 30


@pytest.mark.parametrize("table, path, kind, broken", CASES, ids=[f"{p}:{k}" for _, p, k, _ in CASES])
def test_each_variant_of_a_table_is_one_line_naming_it(tmp_path, capsys, table, path, kind, broken):
    rc, err = _run(tmp_path, capsys, f"{table} = {broken!r}")
    assert rc == 2 and len(err) == 1 and "Traceback" not in err[0], err
    if kind == "absent":                # "QUICK has no key 'metric'": the table and the key
        parent, key = re.fullmatch(r"(.*)\[('[^']*')\]", path).groups()
        assert f"{parent} has no key {key}" in err[0], err
    else:
        assert path in err[0], err


@pytest.mark.parametrize("tail, named", [
    ("del QUICK", "defines no QUICK"),
    ("CONFIG = [1, 2]", "CONFIG = [1, 2] must be a dict"),
    ("ENABLED_LAYERS['resnet5'] = {0: True}", "'resnet5', which is not registered"),
    ("ENABLED_LAYERS['resnet50'] = {99: True}", "ENABLED_LAYERS['resnet50'] names layer 99"),
    ("QUICK['layers']['vgg19'] = [18]", "QUICK['layers']['vgg19'] names layer 18"),
    ("QUICK['extra'] = 1", "QUICK has an unknown key 'extra'"),
    ("MODES['quick'] = {'n_images_inference': 5}", "MODES['quick'] has no key 'n_images_evaluation'"),
    ("MODES['medium']['n_images_inference'] = 0", "MODES['medium']['n_images_inference'] = 0 must be an integer >= 1"),
    ("CONFIG['image_size'] = 8", "config['image_size'] = 8"),
    ("CONFIG['layer_configs'] = [{'name': 'a', 'layers': [7], 'aggregate': None}]",
     "config['layer_configs'][0]['aggregate']"),
    ("CONFIG['layer_configs'] = [{'name': 'a', 'layers': 7}]", "config['layer_configs'][0]['layers'] = 7"),
])
def test_named_mistakes_name_the_global_and_key(tmp_path, capsys, tail, named):
    rc, err = _run(tmp_path, capsys, tail)
    assert rc == 2 and len(err) == 1 and named in err[0], err
