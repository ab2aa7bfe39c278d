"""Run a sweep on a Dask cluster made of SLURM jobs (dask-jobqueue), from the repository folder.

    pip install dask-jobqueue
    python examples/dask_slurm_sweep.py --mode full --jobs-on-slurm 4 --cache-dir /shared/iqm-cache

Each SLURM job starts `--processes` single-threaded Dask workers; the sweep's tasks (one per
layers x transform) run there through joblib's dask backend, and the report is written here.
The workers must see the cache folder at the same path, and import featrank: they run this
Python (`python=sys.executable` below), so the environment where `pip install .` (or
`pip install -e .`) put the package must be on a filesystem the nodes share.
"""
import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--mode", default="full", choices=("quick", "medium", "full"))
    p.add_argument("--cache-dir", required=True)
    p.add_argument("--jobs-on-slurm", type=int, default=4, help="SLURM jobs, each a Dask node")
    p.add_argument("--processes", type=int, default=8, help="workers per SLURM job")
    p.add_argument("--memory", default="64GB", help="memory per SLURM job")
    p.add_argument("--walltime", default="02:00:00")
    a = p.parse_args()

    from dask_jobqueue import SLURMCluster
    from featrank import run_plan
    from featrank import user_config
    from featrank import pipeline

    cluster = SLURMCluster(cores=a.processes, processes=a.processes, memory=a.memory,
                           walltime=a.walltime,
                           python=sys.executable, job_script_prologue=[f"cd {ROOT}"])
    cluster.scale(jobs=a.jobs_on_slurm)
    try:
        cfg = user_config.default_config()
        cfg.update(cache_dir=a.cache_dir, dask_scheduler=cluster.scheduler_address)
        exp = pipeline.run_experiment(cfg, a.mode)
        print(exp.summary)
        print(f"\nResults: {exp.out_dir}")
    finally:
        cluster.close()


if __name__ == "__main__":
    main()
