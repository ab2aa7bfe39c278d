"""Scale-out (issue #11): sharded and torchrun extraction build the single-process cache bit for
bit, a killed shard resumes, the manifest survives writers without locks, and parallel sweeps
(joblib workers, a Dask cluster) write the serial run's CSV.

Extraction here runs the real command in subprocesses, with config.py's own degradations (45
evaluation files), on 5 + 3 random 36-px images at input size 32."""
import copy
import errno
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from featrank import run_plan
from featrank import user_config
from featrank import cli
from featrank import pipeline
from featrank.errors import ConfigError
from featrank.feature_cache import LayerCache
from helpers import TINY_DEGRADATIONS, cache_hits, write_images
from featrank.parallel import ParallelError, Ranks, Shard

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAYERS = ["7", "8"]
# the sweeps in several processes: a small layer and a large one (conv1's 2080-dim Gram, layer3's
# 524,800-dim one, where long reductions would show an order that depends on the process)
SWEEP_LAYERS = ["0", "7"]


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update({"HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **extra})
    return env


def _cmd(tmp_path, cache, *extra):
    return ["main.py", "--build-cache", "--backbone", "resnet50", "--layers", *LAYERS,
            "--weights", "random", "--image-size", "32", "--dataset", str(tmp_path / "imgs"),
            "--n-inference", "5", "--n-evaluation", "3", "--cache-dir", str(cache), "-q", *extra]


def _start(tmp_path, cache, *extra, launcher=(sys.executable,), env=None):
    return subprocess.Popen([*launcher, *_cmd(tmp_path, cache, *extra)], cwd=ROOT, env=env or _env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(proc, timeout=300):
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-3000:]
    return out


def _arrays(cache) -> dict:
    """{relative path: bytes} of every cached array."""
    return {os.path.relpath(p, cache): open(p, "rb").read()
            for p in glob.glob(os.path.join(cache, "**", "*.npy"), recursive=True)
            if "derived_" not in p}


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """The cache one process builds (the reference of every equality below)."""
    tmp = tmp_path_factory.mktemp("single")
    write_images(tmp / "imgs", n=8)
    _finish(_start(tmp, tmp / "cache"))
    arrays = _arrays(tmp / "cache")
    assert len(arrays) == 2 * 46          # 2 layers x (1 reference chunk + clean + 44 levels)
    return tmp, arrays


def _same_images(single, tmp_path):
    shutil.copytree(single[0] / "imgs", tmp_path / "imgs")


def test_two_shards_build_the_single_process_cache(single, tmp_path, caplog, monkeypatch):
    _same_images(single, tmp_path)
    cache = tmp_path / "cache"
    procs = [_start(tmp_path, cache, "--shard", f"{i}/2") for i in range(2)]   # together
    outs = [_finish(p) for p in procs]
    assert _arrays(cache) == single[1]
    # each file written once: the shares are disjoint and cover the 46 units
    records = [json.loads(open(p).read()) for p in glob.glob(str(cache / "**" / "*.record.json"),
                                                               recursive=True)]
    assert len(records) == 2 * 46
    assert all("error" not in o.lower() for o in outs)
    # then a quick run with the same parameters finds everything
    caplog.clear()
    code = cli.main(["--mode", "quick", "--backbone", "resnet50", "--layers", *LAYERS, "--weights",
                      "random", "--image-size", "32",
                      "--dataset", str(tmp_path / "imgs"), "--n-inference", "5", "--n-evaluation", "3",
                      "--cache-dir", str(cache), "--results-dir", str(tmp_path / "results"),
                      "--n-resamples", "0", "--jobs", "1", "-q"],
                     user=run_plan.UserConfig.load(num_workers=0))
    assert code == 0
    hits, misses = cache_hits(caplog)
    assert len(hits) == 2 and not misses


@pytest.mark.slow
def test_torchrun_ranks_build_the_single_process_cache(single, tmp_path):
    _same_images(single, tmp_path)
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    out = _finish(_start(tmp_path, tmp_path / "cache", launcher=(torchrun, "--standalone",
                                                                  "--nproc-per-node", "2")))
    assert _arrays(tmp_path / "cache") == single[1]
    # only rank 0 reports, after the barrier, and it finds the cache complete
    assert "[rank 1/2]" not in out or "CACHE HIT" not in out.split("[rank 1/2]", 1)[1]


@pytest.mark.slow
def test_a_killed_shard_resumes_and_the_cache_is_equal(single, tmp_path):
    _same_images(single, tmp_path)
    cache = tmp_path / "cache"
    proc = _start(tmp_path, cache, "--shard", "0/2")
    deadline = time.time() + 120
    while time.time() < deadline and len(glob.glob(str(cache / "**" / "*.record.json"), recursive=True)) < 6:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    n_before = len(glob.glob(str(cache / "**" / "*.record.json"), recursive=True))
    assert 0 < n_before < 46, "the shard was not stopped midway"
    _finish(_start(tmp_path, cache, "--shard", "1/2"))
    _finish(_start(tmp_path, cache, "--shard", "0/2"))      # the killed shard, again
    assert _arrays(cache) == single[1]
    assert not glob.glob(str(cache / "**" / ".tmp_*"), recursive=True)   # its leftovers are gone


# ---------------------------------------------------------------- the manifest with N writers

def _tiny_cache(tmp_path):
    from featrank.dataset import ImageRecord
    recs = tuple(ImageRecord(f"im{i}", f"{i:064x}") for i in range(3))
    from featrank.feature_cache import evaluation_units
    cache = LayerCache(str(tmp_path / "c"), "bb", 0, "layer", {"k": 1}, [], list(recs), 0, True)
    return cache, evaluation_units(list(recs), TINY_DEGRADATIONS)


def test_a_lost_manifest_update_loses_no_file(tmp_path):
    cache, units = _tiny_cache(tmp_path)
    arrays = [np.full((3, 2), k, np.float32) for k in range(len(units))]
    cache.write(units[0], arrays[0], "float32", len(units))
    meta_path = os.path.join(cache.eval_dir, "metadata.json")
    stale = open(meta_path, "rb").read()          # what a second writer read before the first wrote
    for u, a in zip(units[1:], arrays[1:]):
        cache.write(u, a, "float32", len(units))
    with open(meta_path, "wb") as f:              # that writer's update lands last, without lock
        f.write(stale)
    assert all(cache.check(u) is None for u in units)
    assert all(np.array_equal(cache.load(u), a) for u, a in zip(units, arrays))
    assert cache.missing(units) == []             # ...and the manifest is healed
    assert len(json.load(open(meta_path))["files"]) == len(units)


def test_a_filesystem_without_locks_still_works(tmp_path, monkeypatch, caplog):
    import fcntl

    def refuse(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")
    monkeypatch.setattr(fcntl, "flock", refuse)
    cache, units = _tiny_cache(tmp_path)
    for k, u in enumerate(units):
        cache.write(u, np.full((3, 2), k, np.float32), "float32", len(units))
    assert "refuses file locks" in caplog.text and caplog.text.count("refuses file locks") == 1
    assert cache.missing(units) == []


# ---------------------------------------------------------------- shards and ranks

@pytest.mark.parametrize("text", ["2/2", "-1/2", "0/0", "1", "a/b", "1/2/3"])
def test_a_bad_shard_is_a_usage_error(tmp_path, capsys, text):
    assert cli.main(["--build-cache", "--layers", "8", f"--shard={text}", "--cache-dir",
                      str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert f"--shard {text}" in err and "I/N" in err and "Traceback" not in err


def test_shard_with_a_mode_is_a_usage_error(tmp_path, capsys):
    assert cli.main(["--mode", "quick", "--shard", "0/2", "--cache-dir", str(tmp_path / "c")]) == 2
    assert "--build-cache" in capsys.readouterr().err


def test_shares_are_disjoint_and_cover_everything():
    items = list(range(47))
    shares = [Shard(i, 4).share(items) for i in range(4)]
    assert sorted(x for s in shares for x in s) == items
    assert max(map(len, shares)) - min(map(len, shares)) <= 1
    assert Shard.parse(" 3 / 4 ") == Shard(3, 4)


def test_shards_with_different_reference_sets_share_the_evaluation_files_out():
    """Shard 0/2 started with 5 reference images and shard 1/2 with 150 (one reference chunk
    against two; the evaluation set is drawn first, so it is the same): between them they
    extract every evaluation file once."""
    from featrank.cache_fill import shard_units
    from featrank.dataset import select_images
    from featrank.feature_cache import evaluation_units, reference_units
    shares = []
    for shard, n_ref in ((Shard(0, 2), 5), (Shard(1, 2), 150)):
        ev, ref = select_images("builtin", 3, n_ref, 0)
        units = reference_units(ref) + evaluation_units(ev, TINY_DEGRADATIONS)
        shares.append({u.id for u in shard_units(shard, units) if u.kind == "eval"})
        every = {u.id for u in units if u.kind == "eval"}
    assert not shares[0] & shares[1] and shares[0] | shares[1] == every


def test_torchrun_environment():
    assert Ranks.from_env({}) is None
    assert Ranks.from_env({"RANK": "0", "WORLD_SIZE": "1"}) is None
    rendezvous = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}
    r = Ranks.from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", **rendezvous})
    assert (r.shard, r.local_rank, r.leader) == (Shard(3, 4), 1, False)
    with pytest.raises(ParallelError, match="RANK=4"):
        Ranks.from_env({"RANK": "4", "WORLD_SIZE": "4", **rendezvous})
    with pytest.raises(ParallelError, match="MASTER_ADDR and MASTER_PORT"):
        Ranks.from_env({"RANK": "3", "WORLD_SIZE": "4"})


# ---------------------------------------------------------------- parallel sweeps (library API)

def _sweep_config(tmp_path, **extra):
    cfg = user_config.default_config()
    cfg.update({"working_size": 32, "degradations": copy.deepcopy(TINY_DEGRADATIONS), "batch_size": 8,
                "num_workers": 0, "image_size": 32, "weights": "random", "dataset": str(tmp_path / "imgs"),
                "n_images_inference": 12, "n_images_evaluation": 6, "cache_dir": str(tmp_path / "cache"),
                "results_dir": str(tmp_path / "results"),
                "bootstrap": {"n_resamples": 20, "scope": "top", "confidence": 0.95}, **extra})
    return cfg


def _csv(exp) -> bytes:
    return open(exp.files["csv"], "rb").read()


@pytest.fixture(scope="module")
def sweep_data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sweep")
    write_images(tmp / "imgs", n=20)
    serial = pipeline.run_experiment(_sweep_config(tmp, jobs=1), "medium", SWEEP_LAYERS, progress=False)
    assert len(serial.scored) > 30
    return tmp, _csv(serial)


def test_jobs_2_writes_the_serial_csv(sweep_data):
    tmp, serial = sweep_data
    exp = pipeline.run_experiment(_sweep_config(tmp, jobs=2), "medium", SWEEP_LAYERS, progress=False)
    assert exp.jobs == 2
    assert _csv(exp) == serial
    log = open(os.path.join(exp.out_dir, "experiment.log")).read()
    assert "kernel blocks" in log or "explicit rows" in log   # worker logs are replayed here


def test_bootstrap_all_in_workers_writes_the_serial_csv(sweep_data):
    tmp, _ = sweep_data
    boot = {"n_resamples": 15, "scope": "all", "confidence": 0.9}
    one = pipeline.run_experiment(_sweep_config(tmp, jobs=1, bootstrap=boot), "medium", ["8"], progress=False)
    two = pipeline.run_experiment(_sweep_config(tmp, jobs=2, bootstrap=boot), "medium", ["8"], progress=False)
    assert _csv(one) == _csv(two)
    assert all(r.mean_spearman_ci for r in two.scored)


def test_a_dask_cluster_writes_the_serial_csv(sweep_data):
    distributed = pytest.importorskip("distributed")
    tmp, serial = sweep_data
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        exp = pipeline.run_experiment(_sweep_config(tmp, dask_scheduler=cluster.scheduler_address),
                                      "medium", SWEEP_LAYERS, progress=False)
    assert _csv(exp) == serial


KILLED_RUN = ("import json, sys; from featrank import pipeline; "
              "pipeline.run_experiment(json.loads(sys.argv[1]), 'medium', ['0'], progress=False)")


def _interrupted(cfg, cache, results, signum, when) -> None:
    """run_experiment(cfg) in a process of its own, sent `signum` as soon as `when` (extraction:
    its first cache file; scoring: experiment.log says so) happens."""
    proc = subprocess.Popen([sys.executable, "-c", KILLED_RUN, json.dumps(cfg)], cwd=ROOT, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def started() -> bool:
        if when == "extraction":
            return any(f.endswith(".npy") for _, _, fs in os.walk(cache) for f in fs)
        logs = glob.glob(os.path.join(results, "*", "experiment.log"))
        return any("scoring" in open(f).read() for f in logs)
    deadline = time.monotonic() + 120
    while proc.poll() is None and not started() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, f"the run ended before its {when} could be interrupted"
    proc.send_signal(signum)
    proc.wait(timeout=60)


def test_mos_runs_write_the_serial_csvs_in_two_processes_on_a_dask_cluster_and_resumed(tmp_path):
    """A no-reference and an incomplete full-reference --mos run: --jobs 1, --jobs 2, a Dask
    cluster, and a run interrupted (SIGKILL during extraction, SIGTERM during scoring) then run
    again on its cache write the same CSVs (results, groups, images), byte for byte."""
    distributed = pytest.importorskip("distributed")
    from test_rated_sets import make_full_reference, make_no_reference
    _, no_ref, refs = make_no_reference(tmp_path / "nr")
    full_ref, _, _ = make_full_reference(tmp_path / "fr", n_refs=6, drop=0.2)
    runs = {"no-reference": {"mos": str(no_ref), "mos_reference": str(refs), "mos_bins": 4},
            "full-reference": {"mos": str(full_ref), "mos_reference": "database"}}

    def outputs(name, **where):
        cfg = _sweep_config(tmp_path / name, n_images_inference=12, **{**runs[name], **where})
        exp = pipeline.run_experiment(cfg, "medium", ["0"], progress=False)
        files = sorted(f for f in os.listdir(exp.out_dir) if f.endswith(".csv"))
        assert {"mos_groups.csv", "mos_images.csv"} <= set(files) and len(exp.scored) > 10
        return {f.split("_2")[0]: open(os.path.join(exp.out_dir, f), "rb").read() for f in files}
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        for (name, where), (signum, when) in zip(runs.items(), ((signal.SIGKILL, "extraction"),
                                                               (signal.SIGTERM, "scoring"))):
            serial = outputs(name, jobs=1)
            assert outputs(name, jobs=2) == serial, name
            assert outputs(name, dask_scheduler=cluster.scheduler_address) == serial, name
            cache, killed = tmp_path / name / "resumed_cache", tmp_path / name / "killed"
            cfg = _sweep_config(tmp_path / name, n_images_inference=12, jobs=1, **where,
                                cache_dir=str(cache), results_dir=str(killed))
            _interrupted(cfg, str(cache), str(killed), signum, when)
            assert outputs(name, jobs=1, cache_dir=str(cache)) == serial, (name, when)


def test_an_unreachable_dask_scheduler_is_a_usage_error(sweep_data, monkeypatch, capsys):
    pytest.importorskip("distributed")
    from featrank import parallel
    monkeypatch.setattr(parallel, "DASK_CONNECT_TIMEOUT", "2s")
    tmp, _ = sweep_data
    results = tmp / "results_unreachable"
    code = cli.main(["--mode", "quick", "--layers", "8", "--weights", "random", "--image-size", "32",
                      "--dataset", str(tmp / "imgs"), "--n-inference", "12", "--n-evaluation", "6",
                      "--cache-dir", str(tmp / "cache"), "--results-dir", str(results),
                      "--dask-scheduler", "tcp://127.0.0.1:9", "-q"])
    err = capsys.readouterr().err
    assert code == 2 and "tcp://127.0.0.1:9" in err and "dask scheduler" in err.lower()
    assert not results.exists() or not any(results.iterdir())


def test_the_library_api_takes_a_config_and_leaves_config_py_alone(tmp_path):
    write_images(tmp_path / "imgs", n=12)
    before = run_plan.UserConfig.load()
    cfg = _sweep_config(tmp_path, jobs=1, n_images_inference=6, n_images_evaluation=4)
    first = pipeline.build_cache(cfg, "resnet50", ["8"], shard=Shard(0, 2), progress=False)
    assert first.extracted > 0 and first.missing > 0          # the other half is shard 1's
    second = pipeline.build_cache(cfg, "resnet50", ["8"], shard=Shard(1, 2), progress=False)
    assert second.extracted + first.extracted == 1 + 5 and second.missing == 0
    exp = pipeline.run_experiment(cfg, "quick", ["8"], progress=False)
    (r,) = exp.results
    assert r.scored and -1 <= r.mean_spearman <= 1 and os.path.exists(exp.files["csv"])
    assert run_plan.UserConfig.load() == before      # config.py's tables untouched
    with pytest.raises(ConfigError, match="jobs"):
        pipeline.run_experiment({**cfg, "jobs": 0}, "quick", ["8"], progress=False)
    with pytest.raises(pipeline.UsageError, match="mode"):
        pipeline.run_experiment(cfg, "fast", ["8"], progress=False)


def test_a_dask_cluster_without_workers_or_without_the_project_fails_before_submitting():
    """A scheduler with no workers, or workers that cannot import what the tasks unpickle:
    one ParallelError naming the cause and the fix, before any task is submitted (no hang)."""
    distributed = pytest.importorskip("distributed")
    from featrank import parallel
    with distributed.LocalCluster(n_workers=0, processes=False, dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        with pytest.raises(ParallelError, match="no workers"):
            parallel.check_cluster(client, cluster.scheduler_address, ("featrank.pipeline",), wait=1)
    with distributed.LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        parallel.check_cluster(client, cluster.scheduler_address, ("featrank.pipeline",))
        with pytest.raises(ParallelError, match="cannot import featrank.*pip install"):
            parallel.check_cluster(client, cluster.scheduler_address, ("no_such_module_of_ours",))


_HELD = []


def _hold(mib):
    """A task that keeps `mib` MiB in its worker afterwards (as a sweep worker keeps its spaces)
    and takes over loky's 1 s between memory checks."""
    import time
    _HELD.append(np.ones(mib << 17))
    time.sleep(1.1)
    return os.getpid()


def test_a_worker_holding_memory_between_tasks_is_not_restarted():
    """loky shuts down a worker whose memory grew by 300 MB since its first task; the sweep's
    workers hold their spaces on purpose (parallel._hold_memory), so the same two processes run
    every task: 10 tasks of 200 MiB each."""
    from featrank import parallel
    pids = parallel.sweep_map(_hold, [200] * 10, 2)
    assert len(set(pids)) == 2, pids
