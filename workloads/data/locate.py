"""Where each dataset is looked for under a data root, whether it is there or can be downloaded,
and the one call a workload's ``preflight`` hook makes before Ray starts (:func:`require`).

No torch and at most one short TCP probe per download host and process: it runs in the driver.

The rule, no silent stand-ins:
  - ``data: auto`` at ``full`` scale needs the real dataset: on disk under the data root, or
    downloadable (the workload may download, ``OVERNIGHT_OFFLINE`` is unset and the download host
    accepts a connection within 3 s). Below full scale ``auto`` may fall back to a stand-in or a
    disclosed substitute, and the row's ``data_source`` says which.
  - ``data: real`` needs it at every scale (the trial would fail without it); so does
    ``tokenizer: gpt2`` for the GPT-2 BPE.
  - ``data: standin`` / ``synthetic`` need nothing: a stand-in asked for on purpose.
  - Fashion-MNIST is never the real dataset of a study: it stands in for MNIST or CIFAR-10 only
    below full scale, under ``data: auto``, and is named as a substitute in ``data_source``.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import socket
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator import DataMissing, sha256_file

TINY_SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
GPT2_BPE_URLS = ("https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe",
                 "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json")
# The GPT-2 BPE files as plain files under a data root (../shared/data/README.md), and the sha256 of
# the originals: the hashes tiktoken checks for its "gpt2" encoding (tiktoken_ext/openai_public.py).
GPT2_BPE_DIR = "gpt2-bpe"
GPT2_BPE_SHA256 = {"vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
                   "encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"}
HOSTS = {"tinyshakespeare": "raw.githubusercontent.com", "mnist": "ossci-datasets.s3.amazonaws.com",
         "cifar10": "www.cs.toronto.edu", "wikitext-2": "huggingface.co",
         "gpt2-bpe": "openaipublic.blob.core.windows.net"}
DATASETS = tuple(HOSTS)

IDX_FILES = {"train": "train-images-idx3-ubyte", "test": "t10k-images-idx3-ubyte",
             "train_labels": "train-labels-idx1-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}
MNIST_DIRS = ("MNIST/raw", "mnist", ".")
FASHION_MNIST_DIRS = ("fashion-mnist", "FashionMNIST/raw", "fashion_mnist")
CIFAR10_DIRS = ("cifar-10-batches-py", "cifar10/cifar-10-batches-py")
# (directory, file pattern, data_source): the raw layout first (the seed's), then the tokenised
# layouts of wikitext-2-v1 (wiki.*.tokens) and of the standard word-level LM example (*.txt)
WIKITEXT_LAYOUTS = (("wikitext-2-raw", "wiki.{}.raw", "wikitext-2-raw-v1"),
                    ("wikitext-2", "wiki.{}.tokens", "wikitext-2-v1 tokenised"),
                    ("wikitext-2", "{}.txt", "wikitext-2-v1 tokenised"))
WIKITEXT_SPLITS = {"train": "train", "val": "valid", "test": "test"}


def offline() -> bool:
    return os.environ.get("OVERNIGHT_OFFLINE", "") not in ("", "0")


@functools.lru_cache(maxsize=None)
def _connects(host: str, port: int, timeout: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def reachable(host: str, port: int = 443, timeout: float = 3.0) -> bool:
    """Whether a download from ``host`` can be tried (never when OVERNIGHT_OFFLINE is set)."""
    return not offline() and _connects(host, port, timeout)


# ----------------------------------------------------------------------------- layouts
def tinyshakespeare_paths(root: Path) -> list[Path]:
    return [Path(root) / "tinyshakespeare" / "input.txt", Path(root) / "input.txt"]


def find_tinyshakespeare(root: Path) -> Path | None:
    return next((p for p in tinyshakespeare_paths(root) if p.is_file()), None)


def idx_dirs(root: Path, kind: str = "mnist") -> list[Path]:
    """Where MNIST (``kind="mnist"``) or Fashion-MNIST (``"fashion-mnist"``) IDX files are looked for."""
    return [Path(root) / d for d in (MNIST_DIRS if kind == "mnist" else FASHION_MNIST_DIRS)]


def find_idx(root: Path, stem: str, kind: str = "mnist") -> Path | None:
    for d in idx_dirs(root, kind):
        for name in (stem, stem + ".gz"):
            if (d / name).is_file():
                return d / name
    return None


def mnist_test_files(root: Path) -> list[Path]:
    """MNIST's test set under ``root`` (images first, then their labels when there), found where
    the full MNIST is looked for; empty when the test images are absent. Read alone, it is the
    test-set-only split of workloads/data/mnist.py."""
    images = find_idx(Path(root), IDX_FILES["test"], "mnist")
    if images is None:
        return []
    labels = [images.parent / n for n in (IDX_FILES["test_labels"], IDX_FILES["test_labels"] + ".gz")]
    return [images] + [p for p in labels if p.is_file()][:1]


def idx_files(root: Path, kind: str = "mnist", labels: bool = False) -> dict[str, Path] | None:
    """The IDX files of one directory holding train and test images (and labels when asked for);
    files of different directories are never mixed."""
    stems = ["train", "test"] + (["train_labels", "test_labels"] if labels else [])
    for d in idx_dirs(root, kind):
        found = {}
        for key in stems:
            found[key] = next((d / n for n in (IDX_FILES[key], IDX_FILES[key] + ".gz") if (d / n).is_file()), None)
        if all(found.values()):
            return found
    return None


def cifar10_dir(root: Path) -> Path | None:
    for d in (Path(root) / c for c in CIFAR10_DIRS):
        if (d / "data_batch_1").is_file() and (d / "test_batch").is_file():
            return d
    return None


@dataclass
class WikiFiles:
    """The files of one WikiText-2 layout; ``files`` has train, val and test, or only val and test."""

    source: str                       # data_source of the layout (wikitext-2-raw-v1, wikitext-2-v1 tokenised)
    directory: Path
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return set(self.files) == set(WIKITEXT_SPLITS)


def wikitext_files(root: Path) -> WikiFiles | None:
    """The first layout with all three splits; else the first with validation and test only."""
    partial = None
    for dirname, pattern, source in WIKITEXT_LAYOUTS:
        d = Path(root) / dirname
        files = {k: d / pattern.format(s) for k, s in WIKITEXT_SPLITS.items() if (d / pattern.format(s)).is_file()}
        if set(files) == set(WIKITEXT_SPLITS):
            return WikiFiles(source, d, files)
        if partial is None and {"val", "test"} <= set(files):
            partial = WikiFiles(source, d, {k: files[k] for k in ("val", "test")})
    return partial


def wikitext_looked_in(root: Path) -> list[str]:
    seen = []
    for dirname, pattern, _ in WIKITEXT_LAYOUTS:
        text = str(Path(root) / dirname / pattern.format("{train,valid,test}"))
        if text not in seen:
            seen.append(text)
    return seen


def bpe_files(root: Path) -> dict[str, Path] | None:
    """``<root>/gpt2-bpe/vocab.bpe`` and ``encoder.json`` when both are there (hashes unchecked)."""
    d = Path(root) / GPT2_BPE_DIR
    files = {name: d / name for name in GPT2_BPE_SHA256}
    return files if all(p.is_file() for p in files.values()) else None


@functools.lru_cache(maxsize=16)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    return sha256_file(Path(path))


def sha256_of(path: Path) -> str:
    """The file's sha256, computed once per (path, size, mtime) in a process."""
    st = Path(path).stat()
    return _sha256(str(path), st.st_size, st.st_mtime_ns)


def bpe_mismatches(files: dict[str, Path]) -> list[str]:
    """One line per GPT-2 BPE file whose sha256 is not the original's (none: both are the originals)."""
    out = []
    for name, path in files.items():
        got = sha256_of(path)
        if got != GPT2_BPE_SHA256[name]:
            out.append(f"{path} has sha256 {got[:12]}…, not the original {name}'s {GPT2_BPE_SHA256[name][:12]}…")
    return out


def bpe_refusals(root: Path) -> list[str]:
    """The mismatch lines of ``<root>/gpt2-bpe`` when its files are there and are not the originals
    (refused whatever was asked); none when they are absent or the originals."""
    files = bpe_files(root)
    return bpe_mismatches(files) if files else []


def bpe_cache_dirs(root: Path) -> list[Path]:
    """Where tiktoken's cached GPT-2 BPE files may be: $TIKTOKEN_CACHE_DIR when set (tiktoken
    itself then looks nowhere else), else ``<data_root>/tiktoken`` and tiktoken's default cache."""
    if os.environ.get("TIKTOKEN_CACHE_DIR"):
        return [Path(os.environ["TIKTOKEN_CACHE_DIR"])]
    default = os.environ.get("DATA_GYM_CACHE_DIR") or os.path.join(tempfile.gettempdir(), "data-gym-cache")
    return [Path(root) / "tiktoken", Path(default)]


def bpe_cache_names() -> list[str]:
    """tiktoken names a cached file by the sha1 of its URL."""
    return [hashlib.sha1(u.encode()).hexdigest() for u in GPT2_BPE_URLS]


def find_bpe_cache(root: Path) -> Path | None:
    """The first cache directory holding both GPT-2 BPE files (vocab.bpe and encoder.json)."""
    names = bpe_cache_names()
    return next((d for d in bpe_cache_dirs(root) if all((d / n).is_file() for n in names)), None)


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


# ----------------------------------------------------------------------------- the check
@dataclass
class Status:
    present: bool            # on disk (in the form this scale and setting need)
    looked_in: list[str]
    label: str               # the dataset, as the error names it
    how: str                 # how to get it
    can_download: bool = False
    partial: str = ""        # what is there but not enough, if anything
    no_download: str = ""    # why no download can be tried (when not present)


def _substitute_note(root: Path, of: str) -> str:
    found = idx_files(root, "fashion-mnist")
    if not found:
        return ""
    return (f"; the Fashion-MNIST in {found['train'].parent} is not {of}: it is used as a disclosed substitute "
            f"only by data: auto below full scale")


def status(dataset: str, data_root: Path | str, scale: str = "full", *, download: bool = True,
           strict: bool = False) -> Status:
    """Whether ``dataset`` is under ``data_root`` in the form ``scale`` needs (``strict``: the whole
    dataset, as ``data: real`` asks at every scale), and how to get it."""
    root = Path(data_root)
    blocker = ""   # why a download cannot even be tried, besides the download flag and the network
    if dataset == "tinyshakespeare":
        s = Status(find_tinyshakespeare(root) is not None, [str(p) for p in tinyshakespeare_paths(root)],
                   "tinyshakespeare (input.txt, 1,115,394 characters)",
                   f"save {TINY_SHAKESPEARE_URL} as {root / 'tinyshakespeare' / 'input.txt'}, or run online with "
                   f"download on (the loader fetches it)")
    elif dataset == "mnist":
        s = Status(idx_files(root, "mnist") is not None, [str(d) for d in idx_dirs(root, "mnist")],
                   "MNIST (IDX files train-images-idx3-ubyte, t10k-images-idx3-ubyte, plain or .gz)",
                   f"put MNIST's IDX files in {root / 'MNIST' / 'raw'}, or run online with download on "
                   f"(torchvision fetches them)" + _substitute_note(root, "MNIST"))
        test_only = mnist_test_files(root)
        if not s.present and test_only:
            s.partial = (f"only MNIST's test set is in {test_only[0].parent} (data: auto below full scale splits it "
                         f"8,000 / 2,000, disclosed); full scale and data: real need the training images too")
    elif dataset == "cifar10":
        s = Status(cifar10_dir(root) is not None, [str(root / d) for d in CIFAR10_DIRS],
                   "CIFAR-10 (python batches data_batch_1..5, test_batch)",
                   f"unpack {CIFAR10_URL} into {root} (it gives cifar-10-batches-py/), or run online "
                   f"(torchvision fetches it into {root / 'cifar10'})" + _substitute_note(root, "CIFAR-10"))
    elif dataset == "wikitext-2":
        found = wikitext_files(root)
        # `data: real` means the whole dataset at every scale: a validation+test-only layout is a
        # disclosed part of it that only `auto` below full scale may use
        enough = found is not None and (found.complete or (scale != "full" and not strict))
        s = Status(enough, wikitext_looked_in(root), "WikiText-2 (train, validation and test splits)",
                   f"put wikitext-2-raw-v1 (the Salesforce/wikitext dataset on the Hugging Face hub) in "
                   f"{root / 'wikitext-2-raw'} as wiki.{{train,valid,test}}.raw (the tokenised wiki.*.tokens or "
                   f"{{train,valid,test}}.txt in {root / 'wikitext-2'} work too), or run online (HF datasets "
                   f"fetches it)")
        if found is not None and not found.complete:
            s.partial = f"only the validation and test splits are in {found.directory}; full scale and data: real need the train split"
        if not _installed("datasets"):
            blocker = "the datasets package is not installed"
    elif dataset == "gpt2-bpe":
        have_tiktoken = _installed("tiktoken")
        json_file = root / "gpt2" / "tokenizer.json"
        plain = bpe_files(root)
        bad = bpe_refusals(root)
        present = have_tiktoken and ((plain is not None and not bad) or find_bpe_cache(root) is not None)
        present = present or (json_file.is_file() and _installed("tokenizers"))
        s = Status(present, [str(root / GPT2_BPE_DIR)] + [str(d) for d in bpe_cache_dirs(root)] + [str(json_file)],
                   "GPT-2 BPE (tiktoken encoding 'gpt2'" + ("" if have_tiktoken else "; tiktoken is not installed") + ")",
                   f"{'' if have_tiktoken else 'pip install tiktoken, then '}put the original vocab.bpe and "
                   f"encoder.json in {root / GPT2_BPE_DIR}, or run once online so tiktoken caches them; "
                   f"or --set tokenizer=word")
        if bad:
            s.partial = "; ".join(bad)
        if not have_tiktoken:
            blocker = "tiktoken is not installed"
    else:
        raise ValueError(f"unknown dataset {dataset!r}; known: {', '.join(DATASETS)}")
    s.can_download = bool(download) and not blocker and not s.present and reachable(HOSTS[dataset])
    if not s.present:
        why = ("download is off" if not download else blocker or ("OVERNIGHT_OFFLINE is set" if offline()
               else f"{HOSTS[dataset]} unreachable"))
        s.no_download = f"no download: {why}"
    return s


def needed(value: str, scale: str, explicit: str = "real") -> bool:
    """Whether a config value asks for the real thing: ``explicit`` (real, gpt2) always, ``auto``
    at full scale."""
    return value == explicit or (value == "auto" and scale == "full")


def require(dataset: str, data_root: Path | str, scale: str, data: str = "auto", *, download: bool = True) -> None:
    """Raise DataMissing when a trial at ``scale`` whose config asks for ``data`` (the workload's
    ``data`` value; for ``gpt2-bpe`` its ``tokenizer`` value) needs ``dataset`` and it is neither
    under ``data_root`` nor downloadable. Datasets: tinyshakespeare, mnist, cifar10, wikitext-2,
    gpt2-bpe."""
    explicit = "gpt2" if dataset == "gpt2-bpe" else "real"
    if dataset == "gpt2-bpe" and data != "word":
        bad = bpe_refusals(Path(data_root))
        if bad:   # a corrupt or other vocabulary is refused whatever was asked: never tokenise with it
            raise DataMissing("the original GPT-2 BPE", "; ".join(bad),
                              f"replace them with the original files or remove {Path(data_root) / GPT2_BPE_DIR}")
    if not needed(data, scale, explicit):
        return
    s = status(dataset, data_root, scale, download=download, strict=data == explicit)
    if s.present or s.can_download:
        return
    notes = "; ".join(n for n in (s.partial, s.no_download) if n)
    raise DataMissing(s.label, ", ".join(s.looked_in) + (f" ({notes})" if notes else ""), s.how)


def at_scale(value: str, scale: str, real: str = "real") -> str:
    """What ``auto`` must mean for a trial at ``scale``: at full scale the real thing (``real``,
    or ``gpt2`` for a tokenizer), so a download that fails after the preflight check cannot turn
    into a silent stand-in; below full scale ``auto`` as it is."""
    return real if value == "auto" and scale == "full" else value


def fingerprint(dataset: str, data_root: Path | str) -> str:
    """Which files of ``dataset`` are under ``data_root`` (paths and sizes): put it in a stage
    cache key so that cached tokens or images built from other files (or from a stand-in before the
    data arrived) are not reused."""
    return ";".join(f"{p.resolve()}:{p.stat().st_size}" for p in dataset_files(dataset, data_root))


def dataset_files(dataset: str, data_root: Path | str) -> list[Path]:
    """The files of ``dataset`` under ``data_root`` that a loader would read (none when absent)."""
    root = Path(data_root)
    if dataset == "tinyshakespeare":
        paths = [find_tinyshakespeare(root)]
    elif dataset in ("mnist", "fashion-mnist"):
        paths = list((idx_files(root, dataset, labels=True) or idx_files(root, dataset) or {}).values())
    elif dataset == "cifar10":
        d = cifar10_dir(root)
        paths = sorted(d.glob("*_batch*")) if d else []
    elif dataset == "wikitext-2":
        w = wikitext_files(root)
        paths = [w.files[k] for k in sorted(w.files)] if w else []
    elif dataset == "gpt2-bpe":
        plain = bpe_files(root)
        d = find_bpe_cache(root)
        paths = list(plain.values()) if plain else [d / n for n in bpe_cache_names()] if d else []
    else:
        raise ValueError(f"unknown dataset {dataset!r}")
    return [p for p in paths if p is not None and p.is_file()]


def data_files_for(*datasets: str, when=None):
    """The ``data_files`` hook of a workload whose trials may read ``datasets``: the files of each
    that are under the data root, for the provenance the driver records (their sha256 in
    study.json). ``when(config)``: whether a trial reads them at all (e.g. only the cifar10 task)."""
    def data_files(config: dict, data_root) -> list[Path]:
        if when is not None and not when(config):
            return []
        return [p for d in datasets for p in dataset_files(d, data_root)]
    return staticmethod(data_files)


def preflight_for(dataset: str):
    """The ``preflight`` hook of a workload whose trials read ``dataset`` as chosen by their
    ``data`` (and ``download``) parameters: ``preflight = preflight_for("mnist")`` in the class."""
    def preflight(config: dict, data_root, scale: str) -> None:
        require(dataset, data_root, scale, config.get("data", "auto"), download=bool(config.get("download", True)))
    return staticmethod(preflight)
