"""Character-level text for the quantcorr transformer and the geometry study
(docs/studies/quantization-correction.md, 'Data').

Sources (``data`` config key):
  real     karpathy's tinyshakespeare ``input.txt`` (1,115,394 chars): looked up as
           ``<data_root>/tinyshakespeare/input.txt``, ``<data_root>/input.txt`` or
           ``<cache_dir>/tinyshakespeare/input.txt``; downloaded into the cache dir when online.
  standin  the original texts shipped in ``workloads/data/corpus/*.txt`` (two short plays with songs
           and tales written for this repository), joined in name order with a blank line: 36,456
           characters (36,460 bytes), 63 distinct characters. Not Shakespeare: about 30 times smaller
           than tinyshakespeare, so float perplexities on it are not comparable with the seed's.
  auto     real if found or downloadable, else standin. At full scale a study needs the real text:
           the workload's preflight check (``workloads.data.require``) refuses to start without it.

The text becomes non-overlapping chunks of seq_len + 1 characters (input = first seq_len, target =
last seq_len); the first 90% of the chunks are train, the rest test. Vocabulary = sorted set of the
characters of the text.
"""
from __future__ import annotations

import os
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import torch

from .locate import TINY_SHAKESPEARE_URL, tinyshakespeare_paths

TINY_SHAKESPEARE_CHARS = 1_115_394
CORPUS_DIR = Path(__file__).parent / "corpus"
NEGATIVE_CACHE_S = 3600  # after a failed download, do not retry from this cache dir for an hour


class DataUnavailable(RuntimeError):
    """``data: real`` was asked for and the dataset is neither on disk nor downloadable."""


def _offline() -> bool:
    return os.environ.get("OVERNIGHT_OFFLINE", "") not in ("", "0")


def try_download(url: str, dest: Path, timeout: float = 20.0) -> bool:
    """Download ``url`` to ``dest`` atomically; remember a failure for an hour so a sweep of
    hundreds of trials on an offline machine pays the timeout once, not per trial."""
    if _offline():
        return False
    marker = dest.with_name(dest.name + ".unreachable")
    if marker.exists() and time.time() - marker.stat().st_mtime < NEGATIVE_CACHE_S:
        return False
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(tmp, "wb") as out:
            out.write(resp.read())
        os.replace(tmp, dest)
        return True
    except Exception:  # noqa: BLE001 - offline or unreachable: the caller falls back or reports
        tmp.unlink(missing_ok=True)
        try:
            marker.touch()
        except OSError:
            pass
        return False


def find_tinyshakespeare(data_root: Path | None, cache_dir: Path | None, download: bool = True) -> Path | None:
    candidates = []
    if data_root is not None:
        candidates += tinyshakespeare_paths(Path(data_root))
    if cache_dir is not None:
        candidates.append(Path(cache_dir) / "tinyshakespeare" / "input.txt")
    for p in candidates:
        if p.is_file():
            return p
    if download and cache_dir is not None:
        dest = Path(cache_dir) / "tinyshakespeare" / "input.txt"
        if try_download(TINY_SHAKESPEARE_URL, dest):
            return dest
    return None


def load_text(data: str = "auto", data_root: Path | None = None, cache_dir: Path | None = None,
              download: bool = True) -> tuple[str, str]:
    """(text, data_source) where data_source is ``tinyshakespeare`` or ``standin:corpus``."""
    if data not in ("auto", "real", "standin"):
        raise ValueError(f"data must be auto|real|standin, got {data!r}")
    if data in ("auto", "real"):
        path = find_tinyshakespeare(data_root, cache_dir, download)
        if path is not None:
            return path.read_text(encoding="utf-8"), "tinyshakespeare"
        if data == "real":
            raise DataUnavailable(
                f"tinyshakespeare input.txt not found under {data_root} or {cache_dir} and not downloadable")
    return standin_text(), "standin:corpus"


def standin_text() -> str:
    files = sorted(CORPUS_DIR.glob("*.txt"))
    if not files:
        raise DataUnavailable(f"no stand-in corpus under {CORPUS_DIR}")
    return "\n\n".join(f.read_text(encoding="utf-8") for f in files)


@dataclass
class CharSplits:
    train_x: torch.Tensor  # (N, seq_len) int64
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    vocab: list[str]
    data_source: str

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)


def char_splits(text: str, seq_len: int = 128, train_frac: float = 0.9, data_source: str = "") -> CharSplits:
    """Non-overlapping (seq_len + 1)-chunks, first ``train_frac`` of them train, the rest test."""
    vocab = sorted(set(text))
    index = {ch: i for i, ch in enumerate(vocab)}
    ids = torch.tensor([index[ch] for ch in text], dtype=torch.long)
    n_chunks = len(ids) // (seq_len + 1)
    if n_chunks < 2:
        raise ValueError(f"text of {len(text)} chars is too short for seq_len {seq_len}")
    chunks = ids[: n_chunks * (seq_len + 1)].view(n_chunks, seq_len + 1)
    n_train = int(n_chunks * train_frac)
    n_train = min(max(n_train, 1), n_chunks - 1)
    tr, te = chunks[:n_train], chunks[n_train:]
    return CharSplits(tr[:, :-1].contiguous(), tr[:, 1:].contiguous(), te[:, :-1].contiguous(),
                      te[:, 1:].contiguous(), vocab, data_source)
