"""A crash-safe, content-keyed disk cache of raw layer activations.

Layout (the original pipeline's, with content keys):

    cache/<backbone>/<layer dir>/ref_<key>/chunk_000.npy   images 0-99 of the reference set
                                          /chunk_001.npy   ...
                                          /metadata.json
                                /eval_<key>/clean/level_00.npy           undegraded images
                                           /<degradation>/level_01.npy   first level, ...
                                           /metadata.json

* `cache_key` is the only function that builds keys. It hashes everything that
  changes the stored bytes: the images' sha256 (content, not names), backbone,
  weights provenance, module path, what the hook captures, input size, resize
  rule and normalisation, degradation type, level and seed, stored dtype and the
  cache format version. Each file's key is stored in metadata.json and compared
  on load, so a changed parameter is a CACHE MISS, never a stale hit.
* Every file is written to a temporary name and `os.replace`d into place, then
  recorded twice: in its own record `<file>.record.json`, then in metadata.json
  (both replaced atomically). A file without a record does not exist for the
  cache, so an interrupted build resumes where it stopped.
* N writers (shards, torchrun ranks, SLURM array tasks) may fill one entry at
  once, finishing in any order. An `fcntl` lock serialises the manifest's
  read-modify-write. The per-file records are the truth and the manifest an
  index rebuilt from them (`missing` puts back what it lacks), so on a filesystem where the lock is not honoured (NFS without a lock
  daemon, Lustre mounted without `-o flock`) a lost manifest update loses no
  file: readers fall back to the record. Temporary files of a killed writer
  (named after its host and pid) are removed by the next run on that host.
* Each file's size, shape, dtype and sha256 are checked before use; a corrupt
  file is dropped with a warning and extracted again.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from dataclasses import dataclass

import numpy as np

from featrank.cache_files import (RECORD_SUFFIX, CacheError, atomic_save_npy, atomic_write_bytes,
                                  lock, remove_orphans, valid_file_info, verify_file)

log = logging.getLogger(__name__)

CACHE_FORMAT_VERSION = 1
CACHE_DTYPES = ("float16", "float32")      # config['cache_dtype']
CHUNK_SIZE = 100                     # reference images per chunk file
# Bump when feature_extraction.preprocess (resize to the input size, normalisation) changes its
# output; tests/test_bad_input.py holds a golden hash of it per version.
PREPROCESS_VERSION = 1
CLEAN = "clean"
# Libraries whose code makes the cached bytes, whatever the backbone; plus the backbone's own.
PIPELINE_LIBRARIES = ("torch", "torchvision", "numpy", "scipy", "pillow")


def library_versions(libraries) -> dict:
    """Installed versions, read from package metadata (nothing is imported)."""
    from importlib import metadata
    out = {}
    for name in sorted(set(libraries)):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def code_identity(library: str, interpolation: str, antialias: bool = True) -> dict:
    """What of the code shapes a cached activation's bytes: library versions on the extraction
    path, the versions of the image loader, the degradations and the preprocessing, and the
    resize used to reach the input size. Part of every cache key."""
    from featrank.dataset import LOADER_VERSION
    from featrank.degradation_generator import DEGRADATION_VERSION
    out = {"libraries": library_versions(PIPELINE_LIBRARIES + (library,)),
           "loader": LOADER_VERSION, "degradations": DEGRADATION_VERSION,
           "preprocess": PREPROCESS_VERSION, "interpolation": interpolation}
    if not antialias:     # the references' plain resize; absent otherwise, so older keys hold
        out["antialias"] = False
    return out


def _canonical(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def cache_key(fields: dict) -> str:
    """The one key function: sha256 of the canonical JSON of `fields` (16 hex digits)."""
    return hashlib.sha256(_canonical({"format": CACHE_FORMAT_VERSION, **fields}).encode()).hexdigest()[:16]


def layer_dirname(index: int | None, path: str) -> str:
    """`single_layer_9` for registry layers (the original layout), `module_<path>` otherwise."""
    return f"single_layer_{index}" if index is not None else "module_" + path.replace("/", "_")


@dataclass(frozen=True)
class Unit:
    """One cached file: a reference chunk or one evaluation level."""
    kind: str            # "ref" or "eval"
    group: str           # "" for ref chunks, degradation name or "clean" for eval
    position: int        # chunk index, or level position (0 = clean)
    degradation: str | None   # degradation type (None for ref and clean)
    level: object        # level value (None for ref and clean)
    records: tuple       # the ImageRecords, in row order
    # a rated database's group whose rows are not aligned with the clean unit (an incomplete
    # design): the clean unit's row of each row's reference. None: row i pairs with row i.
    pairs: tuple | None = None

    @property
    def id(self) -> tuple:
        return (self.kind, self.group, self.position)

    @property
    def relpath(self) -> str:
        if self.kind == "ref":
            return f"chunk_{self.position:03d}.npy"
        return f"{self.group}/level_{self.position:02d}.npy"


def reference_units(records) -> list[Unit]:
    return [Unit("ref", "", i // CHUNK_SIZE, None, None, tuple(records[i:i + CHUNK_SIZE]))
            for i in range(0, len(records), CHUNK_SIZE)]


def evaluation_units(records, degradations: dict) -> list[Unit]:
    units = [Unit("eval", CLEAN, 0, None, None, tuple(records))]
    for name, spec in degradations.items():
        for pos, level in enumerate(spec["levels"], start=1):
            units.append(Unit("eval", name, pos, spec["type"], level, tuple(records)))
    return units


def rated_units(references, keys, groups, pairs=None) -> list[Unit]:
    """The evaluation units of a rated database: its references (or a no-reference set's
    reference images) as the clean level, then each group (type, level position) of image files,
    read as they are (no degradation applied). `keys` and `groups` (lists of ImageRecords) are
    aligned; `pairs` (one per group, or None) gives each row's reference position when a group
    is not one image of every reference in reference order."""
    pairs = pairs or [None] * len(keys)
    return [Unit("eval", CLEAN, 0, None, None, tuple(references))] + [
        Unit("eval", t, pos, None, None, tuple(records), None if p is None else tuple(p))
        for (t, pos), records, p in zip(keys, groups, pairs)]


class LayerCache:
    """The cache of one (backbone, layer) for one reference and one evaluation set."""

    def __init__(self, root, backbone, layer_index, module_path, context: dict,
                 ref_records, eval_records, seed: int, verify: bool = True):
        self.layer_dir = os.path.join(root, backbone, layer_dirname(layer_index, module_path))
        self.context = {"backbone": backbone, "module_path": module_path, **context}
        self.seed, self.verify = seed, verify
        self.ref_dir = os.path.join(self.layer_dir, "ref_" + cache_key(
            {**self.context, "set": "ref", "images": [r.sha256 for r in ref_records]}))
        self.eval_dir = os.path.join(self.layer_dir, "eval_" + cache_key(
            {**self.context, "set": "eval", "images": [r.sha256 for r in eval_records]}))
        self.name = f"{backbone}/{module_path}"
        self._meta_memo: dict[str, tuple] = {}

    # ------------------------------------------------------------ keys
    def unit_key(self, unit: Unit) -> str:
        fields = {**self.context, "kind": unit.kind, "position": unit.position,
                  "images": [r.sha256 for r in unit.records]}
        if unit.kind == "eval":
            fields.update({"group": unit.group, "degradation": unit.degradation, "level": unit.level,
                           "seed": self.seed})
        return cache_key(fields)

    def _dir(self, unit: Unit) -> str:
        return self.ref_dir if unit.kind == "ref" else self.eval_dir

    # ------------------------------------------------------------ metadata
    @staticmethod
    def _read_meta(entry: str) -> dict:
        """The entry's manifest; an unusable one (not JSON, not UTF-8, not a manifest) is
        treated as empty, with a warning, so the entry is rebuilt."""
        path = os.path.join(entry, "metadata.json")
        try:
            with open(path, encoding="utf-8") as f:
                meta = json.load(f)
        except FileNotFoundError:
            return {"files": {}}
        except (ValueError, OSError) as exc:     # JSONDecodeError and UnicodeDecodeError
            log.warning("cache manifest %s is unreadable (%s); the entry will be rebuilt", path,
                        type(exc).__name__)
            return {"files": {}}
        if not (isinstance(meta, dict) and isinstance(meta.get("files"), dict)
                and isinstance(meta.get("context", {}), dict)
                and all(valid_file_info(v) for v in meta["files"].values())):
            log.warning("cache manifest %s is not a manifest; the entry will be rebuilt", path)
            return {"files": {}}
        return meta

    def _meta(self, entry: str) -> dict:
        """metadata.json of `entry`, parsed once and read again only when the file changed
        (an atomic replace, by this or another process, gives it a new inode)."""
        path = os.path.join(entry, "metadata.json")
        try:
            st = os.stat(path)
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            return {"files": {}}
        cached = self._meta_memo.get(entry)
        if cached is None or cached[0] != stamp:
            cached = (stamp, self._read_meta(entry))
            self._meta_memo[entry] = cached
        return cached[1]

    def _write_meta(self, entry: str, meta: dict) -> None:
        meta["context"] = self.context
        atomic_write_bytes(os.path.join(entry, "metadata.json"),
                            json.dumps(meta, indent=1, sort_keys=True, default=str).encode())

    @staticmethod
    def _locked(entry: str):
        return lock(os.path.join(entry, ".lock"))

    # ------------------------------------------------------------ per-file records
    @staticmethod
    def _record(entry: str, relpath: str) -> dict | None:
        """The record `<file>.record.json` of one cached file, or None."""
        try:
            with open(os.path.join(entry, relpath + RECORD_SUFFIX), encoding="utf-8") as f:
                info = json.load(f)
        except (OSError, ValueError):
            return None
        if not valid_file_info(info):
            log.warning("cache record %s is not a record; the file will be extracted again",
                        os.path.join(entry, relpath + RECORD_SUFFIX))
            return None
        return info

    @classmethod
    def _records(cls, entry: str) -> dict:
        """{relpath: record} of every file recorded in `entry`."""
        out = {}
        for folder, _, names in os.walk(entry):
            for name in names:
                if name.endswith(RECORD_SUFFIX) and not name.startswith(".tmp_"):
                    rel = os.path.relpath(os.path.join(folder, name[:-len(RECORD_SUFFIX)]), entry)
                    info = cls._record(entry, rel)
                    if info is not None:
                        out[rel.replace(os.sep, "/")] = info
        return out

    def _info(self, unit: Unit) -> dict | None:
        """What the cache knows of `unit`'s file: the manifest's entry, else its own record
        (a manifest update lost on a filesystem without working locks)."""
        entry = self._dir(unit)
        info = self._meta(entry)["files"].get(unit.relpath)
        return info if info is not None else self._record(entry, unit.relpath)

    # ------------------------------------------------------------ queries
    def check(self, unit: Unit, full: bool | None = None) -> str | None:
        """None if `unit` is cached and intact, else why not ('absent', 'stale', 'corrupt: …')."""
        entry = self._dir(unit)
        info = self._info(unit)
        if info is None:
            return "absent"
        if info.get("key") != self.unit_key(unit):
            return "stale"
        problem = verify_file(os.path.join(entry, unit.relpath), info,
                               self.verify if full is None else full)
        return f"corrupt: {problem}" if problem else None

    def missing(self, units) -> list[Unit]:
        """The units that must be extracted; corrupt files are dropped with a warning."""
        out = []
        for entry in sorted({self._dir(u) for u in units}):
            remove_orphans(entry)
            self._heal(entry, sum(self._dir(u) == entry for u in units))
        for unit in units:
            why = self.check(unit)
            if why is None:
                continue
            if why.startswith("corrupt"):
                log.warning("cache file %s/%s is %s; it will be extracted again",
                            self._dir(unit), unit.relpath, why)
                self._forget(unit)
            out.append(unit)
        return out

    def _heal(self, entry: str, n_units: int) -> None:
        """Put files known only by their records (a lost or unusable manifest) back into the
        manifest."""
        records = self._records(entry)
        if set(records) <= set(self._meta(entry)["files"]):
            return
        with self._locked(entry):
            meta = self._read_meta(entry)
            meta["files"].update(records)
            meta["complete"] = len(meta["files"]) >= n_units
            self._write_meta(entry, meta)

    def _forget(self, unit: Unit) -> None:
        entry = self._dir(unit)
        with self._locked(entry):
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(entry, unit.relpath + RECORD_SUFFIX))
            meta = self._read_meta(entry)
            meta["files"].pop(unit.relpath, None)
            meta["complete"] = False
            self._write_meta(entry, meta)
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(entry, unit.relpath))

    # ------------------------------------------------------------ write / read
    def write(self, unit: Unit, array: np.ndarray, dtype: str, n_units: int) -> None:
        """Store `array` (rows = unit.records) atomically, then record it in metadata."""
        if len(array) != len(unit.records):
            raise ValueError(f"{unit.relpath}: {len(array)} rows for {len(unit.records)} images")
        with np.errstate(over="ignore"):      # an overflow is detected and reported just below
            stored = array.astype(dtype, copy=False)
        if not np.isfinite(stored).all():
            if stored is array:               # converted on the accelerator, whose finite check passed
                bad = "overflow to inf in float16 (or NaN/inf activations)"
            else:
                bad = "overflow to inf in float16" if np.isfinite(array).all() else "NaN/inf activations"
            raise CacheError(f"{self.name}: {bad} in {unit.relpath}; set config['cache_dtype'] = "
                             "'float32' (or check the input images)")
        entry = self._dir(unit)
        path = os.path.join(entry, unit.relpath)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        digest = atomic_save_npy(path, stored)
        info = {"key": self.unit_key(unit), "shape": list(stored.shape), "dtype": str(stored.dtype),
                "bytes": os.path.getsize(path), "sha256": digest,
                "images": [r.source for r in unit.records], "degradation": unit.degradation,
                "level": unit.level}
        atomic_write_bytes(path + RECORD_SUFFIX, json.dumps(info, sort_keys=True, default=str).encode())
        with self._locked(entry):        # a lost update (no lock) is healed by `missing`
            meta = self._read_meta(entry)
            meta["files"][unit.relpath] = info
            meta["complete"] = len(meta["files"]) >= n_units
            self._write_meta(entry, meta)

    def load(self, unit: Unit, mmap: bool = True) -> np.ndarray:
        """The cached array of `unit` (memory-mapped); raises CacheError if it changed."""
        entry = self._dir(unit)
        info = self._info(unit)
        if info is None or info.get("key") != self.unit_key(unit):
            raise CacheError(f"{self.name}: {unit.relpath} is not in the cache; rebuild with "
                             "`python main.py --build-cache ...` or rerun the same command")
        path = os.path.join(entry, unit.relpath)
        problem = verify_file(path, info, full=False)
        if problem:
            raise CacheError(f"cache file {path} is corrupt ({problem}); delete it "
                             f"(`rm {path}`) and rerun the same command to extract it again")
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)


class DerivedCache:
    """Artefacts computed from one layer's cached activations (e.g. the Gram kernel blocks of
    representations.gram_kernel_blocks), stored beside its raw entries as
    `<layer dir>/derived_<key>/<name>.npy` with a metadata.json. The key hashes the keys of
    every raw file used, the kind, its parameters and the code version, so a change to any of
    them is a miss. Written atomically under the same lock as raw entries and checked
    (size, shape, dtype, sha256) on load; deleting them loses nothing but the time to
    recompute them."""

    def __init__(self, cache: LayerCache, units: list, kind: str, params: dict):
        self.cache, self.kind, self.params = cache, kind, params
        self.key = cache_key({"kind": kind, "params": params, "context": cache.context,
                              "units": [cache.unit_key(u) for u in units]})
        self.dir = os.path.join(cache.layer_dir, f"derived_{kind}_{self.key}")
        self.info: dict = {}

    def ready(self) -> bool:
        """Whether a complete artefact is recorded (its files are checked by `load`)."""
        meta = LayerCache._read_meta(self.dir)
        return meta.get("key") == self.key and bool(meta.get("complete"))

    def load(self) -> dict | None:
        """{name: array} when every file is present and intact, else None."""
        meta = LayerCache._read_meta(self.dir)
        if meta.get("key") != self.key or not meta.get("complete"):
            return None
        self.info = meta.get("info", {})
        out = {}
        for name, info in meta["files"].items():
            path = os.path.join(self.dir, name)
            problem = verify_file(path, info, self.cache.verify)
            if problem:
                log.warning("derived cache file %s is %s; it will be computed again", path, problem)
                return None
            out[name[:-4]] = np.load(path, allow_pickle=False)
        return out

    def computing(self):
        """A lock held while the artefact is computed: a second process (another worker of a
        parallel sweep, another sweep on this cache) waits, then loads what the first saved."""
        os.makedirs(self.dir, exist_ok=True)
        return lock(os.path.join(self.dir, ".compute.lock"))

    def save(self, arrays: dict, info: dict | None = None) -> None:
        """Write `arrays` ({name: array}) and `info` (how they were made; not part of the key)."""
        os.makedirs(self.dir, exist_ok=True)
        with self.cache._locked(self.dir):
            files = {}
            for name, array in arrays.items():
                path = os.path.join(self.dir, name + ".npy")
                digest = atomic_save_npy(path, array)
                files[name + ".npy"] = {"shape": list(array.shape), "dtype": str(array.dtype),
                                        "bytes": os.path.getsize(path), "sha256": digest}
            self.info = info or {}
            meta = {"key": self.key, "kind": self.kind, "params": self.params, "files": files,
                    "info": info or {},
                    "complete": True, "context": self.cache.context}
            atomic_write_bytes(os.path.join(self.dir, "metadata.json"),
                                json.dumps(meta, indent=1, sort_keys=True, default=str).encode())


def plan_extraction(backbone: str, caches: dict, units: list) -> dict:
    """{unit id: [module paths missing it]} over every layer's cache, with a CACHE HIT or
    CACHE MISS log line per layer. Empty when everything is cached (then nothing, not even
    torch, is needed to go on)."""
    todo = {}
    n_ref = sum(u.kind == "ref" for u in units)
    for path, cache in caches.items():
        missing = cache.missing(units)
        m_ref = sum(u.kind == "ref" for u in missing)
        if missing:
            log.info("CACHE MISS %s/%s: %d of %d reference chunk(s), %d of %d evaluation file(s) "
                     "to extract", backbone, path, m_ref, n_ref, len(missing) - m_ref, len(units) - n_ref)
        else:
            log.info("CACHE HIT %s/%s: %d reference chunk(s), %d evaluation file(s) (%s)",
                     backbone, path, n_ref, len(units) - n_ref, cache.eval_dir)
        for u in missing:
            todo.setdefault(u.id, []).append(path)
    return todo


BASELINES_DIR = "baselines"     # <cache_dir>/baselines/<name>/<key>.npy: baselines.py's values


def _baseline_rows(bdir: str) -> list[dict]:
    rows = []
    for name in sorted(os.listdir(bdir)):
        files = [os.path.join(bdir, name, f) for f in sorted(os.listdir(os.path.join(bdir, name)))
                 if f.endswith(".npy")] if os.path.isdir(os.path.join(bdir, name)) else []
        rows.append({"backbone": BASELINES_DIR, "layer": name, "entry": "per-image values",
                     "kind": "baseline", "module_path": "pixels", "files": len(files),
                     "bytes": sum(os.path.getsize(f) for f in files), "complete": True, "weights": {}})
    return rows


def cache_info(root: str) -> list[dict]:
    """Every entry under `root`: backbone, layer, entry, files, bytes, complete, key."""
    rows = []
    if not os.path.isdir(root):
        return rows
    for backbone in sorted(os.listdir(root)):
        bdir = os.path.join(root, backbone)
        if not os.path.isdir(bdir):
            continue
        if backbone == BASELINES_DIR:
            rows += _baseline_rows(bdir)
            continue
        for layer in sorted(os.listdir(bdir)):
            ldir = os.path.join(bdir, layer)
            for entry in sorted(os.listdir(ldir)) if os.path.isdir(ldir) else []:
                edir = os.path.join(ldir, entry)
                meta = LayerCache._read_meta(edir)
                meta["files"].update(LayerCache._records(edir))
                size = sum(os.path.getsize(os.path.join(dp, f))
                           for dp, _, fs in os.walk(edir) for f in fs)
                rows.append({"backbone": backbone, "layer": layer, "entry": entry,
                             "kind": meta.get("kind", "activations"),
                             "module_path": meta.get("context", {}).get("module_path", "?"),
                             "files": len(meta["files"]), "bytes": size,
                             "complete": bool(meta.get("complete")),
                             "weights": meta.get("context", {}).get("weights", {})})
    return rows
