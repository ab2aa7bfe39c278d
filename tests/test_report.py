"""report.html: opened in a real headless browser (Chromium through Selenium), rebuilt
byte-identical from a finished run, its heatmap named by module path, and its feature maps
checked against an independent PCA."""
import csv
import json
import os
import re
import shutil

import numpy as np
import pytest

from featrank import feature_maps
from featrank import cli
from featrank.feature_spaces import CLEAN_KEY, FeatureSpace, explicit_kernel
from helpers import tiny_args, tiny_config

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
GENERATED = re.compile(r"generated \d{4}-\d\d-\d\d \d\d:\d\d:\d\d")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A small medium run on the built-in data, with its report (config.py's "auto": on in medium)."""
    tmp = tmp_path_factory.mktemp("report")
    assert cli.main(tiny_args(tmp, "--mode", "medium", "--n-inference", "12", "--n-evaluation", "5"),
                     user=tiny_config(report="auto")) == 0
    (out,) = (tmp / "results").iterdir()
    return out


def _csv_rows(run_dir):
    (path,) = run_dir.glob("results_*.csv")
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _browser():
    if not (CHROMIUM and CHROMEDRIVER):
        if os.environ.get("CI"):
            pytest.fail("chromium and chromium-driver are missing; .ci/run installs them with apt-get")
        pytest.skip("chromium / chromium-driver not installed (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,2000"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


@pytest.mark.slow
def test_the_report_in_a_real_browser(run_dir, tmp_path):
    """Chromium opens report.html: no console error, no request leaves the file; one table row
    per CSV row; a header click sorts; a metric filter hides the other metrics; every image has
    a size. A screenshot is kept in the test's temporary folder."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select
    rows = _csv_rows(run_dir)
    driver = _browser()
    try:
        driver.get((run_dir / "report.html").as_uri())
        assert driver.execute_script("return document.readyState") == "complete"
        table = driver.find_elements(By.CSS_SELECTOR, "#ranking tbody tr")
        assert len(table) == len(rows)
        headers = [th.text for th in driver.find_elements(By.CSS_SELECTOR, "#ranking thead th")]

        def column(name):
            i = headers.index(name)
            return [tr.find_elements(By.TAG_NAME, "td")[i].get_attribute("data-v")
                    for tr in driver.find_elements(By.CSS_SELECTOR, "#ranking tbody tr")
                    if tr.is_displayed()]
        # the page comes ranked; a click on "metric" sorts by metric name, a second reverses it
        header = driver.find_elements(By.CSS_SELECTOR, "#ranking thead th")[headers.index("metric")]
        header.click()
        assert column("metric") == sorted(r["metric"] for r in rows)
        header.click()
        assert column("metric") == sorted((r["metric"] for r in rows), reverse=True)
        rho = driver.find_elements(By.CSS_SELECTOR, "#ranking thead th")[headers.index("mean ρ")]
        rho.click()                                        # numbers sort as numbers, empty last
        values = column("mean ρ")
        numbers = [float(v) for v in values if v]
        assert numbers == sorted(numbers) and values[len(numbers):] == [""] * (len(values) - len(numbers))
        assert len(numbers) == sum(r["status"] == "scored" for r in rows)
        rank = driver.find_elements(By.CSS_SELECTOR, "#ranking thead th")[headers.index("rank")]
        rank.click()
        rank.click()                                       # descending: 10 before 9, not "9" > "10"
        ranks = [int(v) for v in column("rank") if v]
        assert ranks == list(range(len(numbers), 0, -1))

        Select(driver.find_element(By.CSS_SELECTOR, "select[data-filter=metric]")).select_by_value("kid")
        shown = [tr for tr in driver.find_elements(By.CSS_SELECTOR, "#ranking tbody tr") if tr.is_displayed()]
        assert len(shown) == sum(r["metric"] == "kid" for r in rows) > 0
        assert set(column("metric")) == {"kid"}
        assert driver.find_element(By.ID, "shown").text == f"{len(shown)} of {len(rows)} rows"

        images = driver.find_elements(By.TAG_NAME, "img")
        assert len(images) >= 1 + 1 + 3          # a top curve, the strip, three maps at least
        for img in images:
            w, h = driver.execute_script("return [arguments[0].naturalWidth, arguments[0].naturalHeight]", img)
            assert w > 0 and h > 0, img.get_attribute("alt")
        assert driver.save_screenshot(str(tmp_path / "report.png"))
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors
        urls = [json.loads(e["message"])["message"]["params"]["request"]["url"]
                for e in driver.get_log("performance")
                if json.loads(e["message"])["message"]["method"] == "Network.requestWillBeSent"]
        assert urls and all(u.split(":", 1)[0] in ("file", "data") for u in urls), urls
    finally:
        driver.quit()
    assert (tmp_path / "report.png").stat().st_size > 10_000


@pytest.mark.slow
def test_rebuilt_report_is_the_runs_apart_from_the_generation_time(run_dir, tmp_path, capsys):
    written = (run_dir / "report.html").read_text()
    copy = tmp_path / run_dir.name
    shutil.copytree(run_dir, copy)
    (copy / "report.html").unlink()
    assert cli.main(["--report", str(copy)], user=tiny_config()) == 0
    assert f"wrote {copy / 'report.html'}" in capsys.readouterr().out
    rebuilt = (copy / "report.html").read_text()
    assert len(GENERATED.findall(written)) == 1
    assert GENERATED.sub("", rebuilt) == GENERATED.sub("", written)
    assert sorted(p.name for p in copy.iterdir()) == sorted(p.name for p in run_dir.iterdir())


@pytest.mark.slow
def test_heatmap_rows_are_module_paths_and_cells_name_their_winner(run_dir):
    """Read from the HTML text: each heatmap row is a module path, each cell holds the best mean
    rho of its (layers, metric) over transforms and models, as computed here from the CSV, and
    names that row's transform and model."""
    text = (run_dir / "report.html").read_text()
    heat = text[text.index('<table class="heat"'):]
    heat = heat[:heat.index("</table>")]
    body = heat[heat.index("<tbody>"):]
    metrics = re.findall(r"<th>([^<]+)</th>", heat[:heat.index("</thead>")])[1:]
    best = {}
    for r in _csv_rows(run_dir):
        if r["status"] != "scored" or r["backbone"] == "baseline":
            continue
        key = (f"{r['backbone']} {r['module_paths']}", r["metric"])
        if key not in best or float(r["mean_spearman"]) > float(best[key]["mean_spearman"]):
            best[key] = r
    rows = re.findall(r"<tr><th>([^<]+)</th>(.*?)</tr>", body, re.S)
    assert [layer for layer, _ in rows] == ["resnet50 layer3", "resnet50 layer4", "resnet50 avgpool"]
    for layer, cells in rows:
        cells = re.findall(r"<td[^>]*>(.*?)</td>", cells, re.S)
        assert len(cells) == len(metrics)
        for metric, cell in zip(metrics, cells):
            r = best.get((layer, metric))
            if r is None:
                assert cell == ""
                continue
            value, *small = re.findall(r"^([-\d.]+)|<small>([^<]*)</small>", cell)
            assert float(value[0]) == pytest.approx(float(r["mean_spearman"]), abs=5e-4)
            assert [s[1] for s in small] == [r["transform"], r["distribution"] or "no model"]


def _space(seed=0, kernel=False):
    rng = np.random.default_rng(seed)
    ref = rng.normal(size=(40, 12))
    evals = {CLEAN_KEY: rng.normal(size=(9, 12)), ("blur", 1): rng.normal(1, 1, (9, 12)),
             ("blur", 2): rng.normal(2, 1, (9, 12))}
    space = FeatureSpace.rows(ref, evals)
    return FeatureSpace.kernels(explicit_kernel(ref, evals)) if kernel else space


def test_map_coordinates_are_the_reference_pca_in_either_form():
    """Explicit rows and the same rows as kernel blocks (span coordinates) give scikit-learn's
    PCA of the reference rows, applied to every set, up to each component's sign."""
    from sklearn.decomposition import PCA
    space = _space()
    keys = [CLEAN_KEY, ("blur", 1), ("blur", 2)]
    pca = PCA(5, svd_solver="full").fit(space.ref)
    want = [pca.transform(space.ref)] + [pca.transform(space.evals[k]) for k in keys]
    for form in (space, _space(kernel=True)):
        ref, evals = feature_maps.projected_sets(form, keys, 5)
        got = [ref] + [evals[k] for k in keys]
        sign = np.sign(np.sum(want[0] * got[0], axis=0))
        for g, w in zip(got, want):
            np.testing.assert_allclose(g * sign, w, atol=1e-9)


def test_a_map_is_the_same_twice_and_names_every_set():
    m1 = feature_maps.space_map(_space(kernel=True), "blur", [0.5, 1.0], seed=3)
    m2 = feature_maps.space_map(_space(kernel=True), "blur", [0.5, 1.0], seed=3)
    assert m1 == m2
    assert [s["name"] for s in m1["sets"]] == ["reference", "clean", "level 1: 0.5", "level 2: 1.0"]
    assert [len(s["xy"]) for s in m1["sets"]] == [40, 9, 9, 9] and m1["form"] == "kernel"
    assert feature_maps.map_degradation({"b": {"levels": [1, 2]}, "a": {"levels": [1, 2]},
                                         "c": {"levels": [1]}}) == "a"


def test_maps_in_two_processes_equal_the_maps_one_by_one_and_the_reference_is_drawn_once():
    """The t-SNE of the maps runs in `jobs` processes, each one-threaded: the same coordinates
    as here. A clean set that is the reference set itself (a no-reference rated set) is not
    drawn a second time."""
    from featrank import parallel
    space = _space(kernel=True)
    parts, n_ref = feature_maps.map_parts(space, "blur", [0.5, 1.0], 3)
    tasks = [(np.vstack([p[2] for p in parts]), seed, feature_maps.MAP_SETTINGS) for seed in (3, 4)]
    here = [feature_maps._embed(t)[0] for t in tasks]
    there = [xy for xy, _ in parallel.sweep_map(feature_maps._embed, tasks, 2)]
    assert all(np.array_equal(a, b) for a, b in zip(here, there)) and n_ref == 40
    once = feature_maps.space_map(space, "blur", [0.5, 1.0], seed=3, clean_is_reference=True)
    assert [s["name"] for s in once["sets"]] == ["reference", "level 1: 0.5", "level 2: 1.0"]


@pytest.mark.slow
def test_report_on_off_and_rebuilt_for_a_run_without_one(tmp_path, capsys):
    """quick mode writes no report unless asked; --report on a run that had none computes its
    strip and maps from the run's cache (the run's own derived entries: the degradations keep the
    run's order, not the JSON's sorted one); without that cache the report says so and opens."""
    user = tiny_config(degradations={"noise": {"type": "gaussian_noise", "levels": [10, 40]},
                                     "blur": {"type": "gaussian_blur", "levels": [1.0, 3.0]}})
    args = tiny_args(tmp_path, "--mode", "quick", "--n-inference", "10", "--n-evaluation", "4")
    assert cli.main(args, user=user) == 0
    (first,) = (tmp_path / "results").iterdir()
    assert not (first / "report.html").exists()
    derived = sorted(p.name for p in (tmp_path / "cache").rglob("derived_*"))
    assert derived
    assert cli.main(["--report", str(first)], user=user) == 0
    assert sorted(p.name for p in (tmp_path / "cache").rglob("derived_*")) == derived
    text = (first / "report.html").read_text()
    assert text.index("noise (gaussian_noise") < text.index("blur (gaussian_blur")
    maps = json.loads((first / "feature_maps.json").read_text())
    assert [m["rank"] for m in maps["maps"]] == [1] and "sets" in maps["maps"][0]
    assert (first / "degradation_strip.png").stat().st_size > 1000
    assert 'src="data:image/png;base64,' in (first / "report.html").read_text()

    shutil.rmtree(tmp_path / "cache")
    (first / "feature_maps.json").unlink()
    assert cli.main(["--report", str(first)], user=user) == 0
    text = (first / "report.html").read_text()
    assert "no longer holds these features" in text
    assert not (tmp_path / "cache" / "resnet50").exists()          # nothing was extracted

    assert cli.main(args + ["--report"], user=user) == 0
    second = max((tmp_path / "results").iterdir())
    assert second != first and (second / "report.html").exists()


def test_report_of_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert cli.main(["--report", str(tmp_path / "nope")], user=tiny_config()) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "nope" in err and "results folder" in err
    (tmp_path / "empty").mkdir()
    assert cli.main(["--report", str(tmp_path / "empty")], user=tiny_config()) == 2
    err = capsys.readouterr().err.strip()
    assert "results_*.json" in err and err.count("\n") == 0
    (tmp_path / "empty" / "results_medium_x.json").write_text("{not json")
    assert cli.main(["--report", str(tmp_path / "empty")], user=tiny_config()) == 2
    assert "not a results JSON" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "empty").iterdir()) == ["results_medium_x.json"]


@pytest.mark.parametrize("value", [1, "yes", None, "True"])
def test_report_setting_must_be_auto_or_a_bool(tmp_path, capsys, value):
    rc = cli.main(tiny_args(tmp_path, "--mode", "quick"), user=tiny_config(report=value))
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0 and "config['report']" in err and repr(value) in err
    assert not (tmp_path / "results").exists() and not (tmp_path / "cache").exists()


def _columns_of(row_cells, titles):
    return {t: c for t, c in zip(titles, row_cells)}


def test_the_tie_mark_follows_tied_with_top_of_its_own_criterion(run_dir):
    """★ in the 'tied' column exactly when the row's tied_with_top is true, in the 'tied (MOS)'
    column exactly when its mos.tied_with_top is; the row is highlighted by the criterion the
    run ranks by. And in the run's report.html, the table's stars are the JSON's tied rows."""
    from featrank import html_report
    results = json.loads(next(run_dir.glob("results_*.json")).read_text())
    base = next(r for r in results["results"] if r["status"] == "scored")
    degs = list(results["results"][0]["per_degradation"])
    titles = [c["title"] for c in html_report._columns(degs, True, "mos")]
    for mono in (True, False, None):
        for mos in (True, False, None):
            r = {**base, "tied_with_top": mono,
                 "mos": {"srcc": 0.5, "srcc_ci": [0.4, 0.6], "delta_top": 0.1, "krcc": 0.4,
                         "plcc": 0.5, "delta_top_ci": [-0.1, 0.2], "tied_with_top": mos}}
            for by in ("monotonicity", "mos"):
                row = html_report._table_row(r, degs, True, by)
                cells = _columns_of(row["cells"], titles)
                assert cells["tied"]["star"] is (mono is True), (mono, mos)
                assert cells["tied (MOS)"]["star"] is (mos is True), (mono, mos)
                assert cells["tied"]["v"] == ("" if mono is None else int(mono))
                highlighted = " tied" in row["cls"]
                assert highlighted is bool(mono if by == "monotonicity" else mos), (by, mono, mos)
    page = (run_dir / "report.html").read_text()
    table = page[page.index("<tbody"):page.index("</tbody>")]
    stars = sum("&#9733;" in tr for tr in table.split("<tr")[1:])
    assert stars == sum(bool(r.get("tied_with_top")) for r in results["results"]) >= 1
