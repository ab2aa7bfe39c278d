"""Per-level FID, d=2048, 1000 reference rows, 50 evaluation rows: ours with the reference
precomputed once vs pytorch-fid's calculate_frechet_distance on the same data (target >= 1000x).
    .venv/bin/python bench/bench_fid.py
"""
import os
import sys
import time


import numpy as np  # noqa: E402
from pytorch_fid.fid_score import calculate_frechet_distance  # noqa: E402

from featrank import distance_metrics as dm  # noqa: E402


def main(d=2048, n_ref=1000, n_ev=50, levels=5):
    rng = np.random.default_rng(0)
    mix = rng.normal(size=(d, d)) / np.sqrt(d)
    ref = rng.normal(size=(n_ref, d)) @ mix
    evs = [rng.normal(size=(n_ev, d)) @ mix + 0.05 * k for k in range(levels)]
    mu1, s1 = np.mean(ref, 0), np.cov(ref, rowvar=False)

    t0 = time.perf_counter()
    reference = dm.FIDReference(ref)
    t_pre = time.perf_counter() - t0
    ours, t_ours = [], []
    for ev in evs:
        t0 = time.perf_counter()
        ours.append(reference.score(ev))
        t_ours.append(time.perf_counter() - t0)
    peer, t_peer = [], []
    for ev in evs[:2]:          # each call takes seconds; two levels are enough to time it
        t0 = time.perf_counter()
        mu2, s2 = np.mean(ev, 0), np.cov(ev, rowvar=False)
        peer.append(float(np.real(calculate_frechet_distance(mu1, s1, mu2, s2))))
        t_peer.append(time.perf_counter() - t0)
    per_ours, per_peer = float(np.median(t_ours)), float(np.median(t_peer))
    print(f"d={d}, reference {n_ref} rows (precomputed once in {t_pre:.2f}s), evaluation {n_ev} rows")
    for k in range(2):
        print(f"level {k}: ours {ours[k]:.6f}  pytorch-fid {peer[k]:.6f}  "
              f"rel. diff {abs(ours[k] - peer[k]) / peer[k]:.2e}")
    print(f"per level: ours {per_ours * 1e3:.2f} ms, pytorch-fid {per_peer:.2f} s")
    ratio = per_peer / per_ours
    print(f"speed-up = {ratio:.0f}x (target >= 1000x) -> {'PASS' if ratio >= 1000 else 'FAIL'}")


if __name__ == "__main__":
    main()
