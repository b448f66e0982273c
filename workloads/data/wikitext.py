"""Token streams for language-model workloads (RAM-LM, docs/studies/ramlm.md, 'Data and tokenizers').

Sources (``data`` config key):
  real       WikiText-2 raw v1: local files ``<data_root>/wikitext-2-raw/wiki.{train,valid,test}.raw``,
             else HF ``datasets`` (``wikitext`` / ``wikitext-2-raw-v1``, cached under
             ``<data_root>/hf``; downloads when online). Each split's lines are joined with one space.
  standin    an offline English corpus: ``workloads/data/corpus/*.txt`` when it holds at least 300 KB,
             else the Python documentation text bundled with the interpreter (``pydoc_data.topics``,
             about 465 KB of English prose and code).
  synthetic  a seeded Zipf-distributed stream with first-order structure (for benchmarks).
  auto       real if found or downloadable, else standin.

Tokenizers (``tokenizer`` key):
  gpt2       the GPT-2 BPE through ``tiktoken`` (encoding ``gpt2``, no special tokens), or through
             ``tokenizers`` when a ``gpt2`` tokenizer.json is under ``<data_root>/gpt2``.
             tiktoken looks for its BPE files in ``<data_root>/tiktoken`` (TIKTOKEN_CACHE_DIR).
  word       a word-level tokenizer trained on the train split (most frequent words, ``<unk>`` for
             the rest; ids in alphabetical order, so id order is not frequency order, as in GPT-2).
  auto       gpt2 when available, else word.

Every result records ``data_source`` and ``tokenizer`` so each row says what it ran on.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

WIKITEXT_FILES = {"train": "wiki.train.raw", "val": "wiki.valid.raw", "test": "wiki.test.raw"}
HF_SPLITS = {"train": "train", "val": "validation", "test": "test"}
GPT2_VOCAB = 50257
MIN_CORPUS_BYTES = 300_000


class DataUnavailable(RuntimeError):
    """The requested data or tokenizer cannot be had here; the message says what is missing."""


@dataclass
class TokenSplits:
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    vocab_size: int
    data_source: str
    tokenizer: str

    def truncated(self, train: int = 0, val: int = 0, test: int = 0) -> "TokenSplits":
        """Prefixes of each split (0 = keep all), as the seed's fast mode (50K/10K/10K)."""
        cut = lambda a, n: a[:n] if n and n > 0 else a  # noqa: E731
        return TokenSplits(cut(self.train, train), cut(self.val, val), cut(self.test, test),
                           self.vocab_size, self.data_source, self.tokenizer)


# ----------------------------------------------------------------------------- raw text
def wikitext_text(data_root: Path, download: bool = True) -> dict[str, str] | None:
    """The three WikiText-2 raw splits as joined strings, or None if not available."""
    local = Path(data_root) / "wikitext-2-raw"
    if all((local / f).is_file() for f in WIKITEXT_FILES.values()):
        return {k: " ".join((local / f).read_text(encoding="utf-8").splitlines()) for k, f in WIKITEXT_FILES.items()}
    if not download or not _host_resolves("huggingface.co"):
        return None   # offline: fail fast instead of the hub client's minute of retries
    try:
        import datasets  # noqa: PLC0415
        ds = datasets.load_dataset("wikitext", "wikitext-2-raw-v1", cache_dir=str(Path(data_root) / "hf"))
        return {k: " ".join(ds[s]["text"]) for k, s in HF_SPLITS.items()}
    except Exception:  # offline, hub unreachable or datasets failing: the caller falls back
        return None


def _host_resolves(host: str) -> bool:
    import socket  # noqa: PLC0415
    try:
        socket.getaddrinfo(host, 443)
        return True
    except OSError:
        return False


def standin_text() -> tuple[dict[str, str], str]:
    """An offline English corpus split 70/15/15 at paragraph boundaries."""
    corpus_dir = Path(__file__).parent / "corpus"
    files = sorted(corpus_dir.glob("*.txt")) if corpus_dir.is_dir() else []
    # a shipped corpus is used only when it is large enough for the fast scale (50K/10K/10K tokens)
    if files and sum(f.stat().st_size for f in files) >= MIN_CORPUS_BYTES:
        text = "\n\n".join(f.read_text(encoding="utf-8") for f in files)
        name = "standin:corpus"
    else:
        import pydoc_data.topics as topics  # noqa: PLC0415  (ships with CPython)
        text = "\n\n".join(topics.topics[k] for k in sorted(topics.topics))
        name = "standin:pydoc_topics"
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    total = sum(len(p) for p in paragraphs)
    splits: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    acc = 0
    for p in paragraphs:
        key = "train" if acc < 0.70 * total else "val" if acc < 0.85 * total else "test"
        splits[key].append(" ".join(p.split()))
        acc += len(p)
    return {k: " ".join(v) for k, v in splits.items()}, name


# ----------------------------------------------------------------------------- tokenizers
class WordTokenizer:
    """Word-level tokenizer: words, numbers and single punctuation marks; id 0 = ``<unk>``."""

    pattern = re.compile(r"\w+|[^\w\s]")

    def __init__(self, vocab: list[str]):
        self.vocab = vocab
        self.index = {w: i for i, w in enumerate(vocab)}

    @classmethod
    def train(cls, text: str, vocab_size: int) -> "WordTokenizer":
        from collections import Counter  # noqa: PLC0415
        counts = Counter(cls.pattern.findall(text))
        kept = [w for w, _ in counts.most_common(max(1, vocab_size - 1))]
        return cls(["<unk>"] + sorted(kept))

    def encode(self, text: str) -> np.ndarray:
        return np.fromiter((self.index.get(w, 0) for w in self.pattern.findall(text)), dtype=np.int64)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)


def gpt2_encoder(data_root: Path):
    """A callable str -> int64 ids for the GPT-2 BPE, or raise DataUnavailable saying what is missing."""
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(Path(data_root) / "tiktoken"))
    problems = []
    try:
        import tiktoken  # noqa: PLC0415
        enc = tiktoken.get_encoding("gpt2")
        return lambda s: np.asarray(enc.encode_ordinary(s), dtype=np.int64)
    except ImportError:
        problems.append("the 'tiktoken' package is not installed")
    except Exception as exc:  # files not cached and no network
        problems.append(f"tiktoken could not load the gpt2 BPE files ({type(exc).__name__})")
    tok_file = Path(data_root) / "gpt2" / "tokenizer.json"
    try:
        from tokenizers import Tokenizer  # noqa: PLC0415
        if tok_file.is_file():
            tok = Tokenizer.from_file(str(tok_file))
            return lambda s: np.asarray(tok.encode(s, add_special_tokens=False).ids, dtype=np.int64)
        problems.append(f"no {tok_file} for the 'tokenizers' package")
    except ImportError:
        problems.append("the 'tokenizers' package is not installed")
    raise DataUnavailable("GPT-2 BPE unavailable: " + "; ".join(problems)
                          + ". Install tiktoken (pip install tiktoken) with network access or a populated "
                          f"{Path(data_root) / 'tiktoken'}, or use tokenizer: word")


def tokenize(texts: dict[str, str], tokenizer: str, data_root: Path, word_vocab: int) -> tuple[dict[str, np.ndarray], int, str]:
    if tokenizer in ("auto", "gpt2"):
        try:
            enc = gpt2_encoder(data_root)
            return {k: enc(v) for k, v in texts.items()}, GPT2_VOCAB, "gpt2"
        except DataUnavailable:
            if tokenizer == "gpt2":
                raise
    if tokenizer not in ("auto", "gpt2", "word"):
        raise ValueError(f"tokenizer must be auto, gpt2 or word, got {tokenizer!r}")
    wt = WordTokenizer.train(texts["train"], word_vocab)
    return {k: wt.encode(v) for k, v in texts.items()}, wt.vocab_size, f"word{wt.vocab_size}"


# ----------------------------------------------------------------------------- synthetic
def zipf_stream(n: int, vocab_size: int, exponent: float = 0.95, follow_prob: float = 0.5, seed: int = 0) -> np.ndarray:
    """Seeded token stream: with probability ``follow_prob`` a token is its predecessor's fixed
    successor, else a fresh Zipf(exponent) draw. Ranks map to ids through a random permutation,
    so frequency order differs from id order (as with GPT-2 tokens on WikiText-2)."""
    rng = np.random.default_rng(seed)
    rank_to_id = rng.permutation(vocab_size)
    cdf = np.cumsum(1.0 / np.arange(1, vocab_size + 1, dtype=np.float64) ** exponent)
    cdf /= cdf[-1]
    draw = lambda m: rank_to_id[np.minimum(np.searchsorted(cdf, rng.random(m)), vocab_size - 1)]  # noqa: E731
    tokens = draw(n).astype(np.int64)
    successor = draw(vocab_size).astype(np.int64)
    follow = rng.random(n) < follow_prob
    follow[0] = False
    # offset within a run of "follow" positions; level k is filled from level k-1
    run_start = np.maximum.accumulate(np.where(~follow, np.arange(n), 0))
    offset = np.arange(n) - run_start
    for k in range(1, int(offset.max()) + 1 if n else 1):
        idx = np.nonzero(offset == k)[0]
        tokens[idx] = successor[tokens[idx - 1]]
    return tokens


# ----------------------------------------------------------------------------- entry point
def _cache_file(cache_dir: Path, key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return Path(cache_dir) / "lm_tokens" / f"{digest}.npz"


def load_token_splits(data: str = "auto", tokenizer: str = "auto", data_root: Path | str = ".data",
                      cache_dir: Path | str | None = None, word_vocab: int = 8192,
                      synthetic_sizes: tuple[int, int, int] = (2_400_000, 251_000, 288_000),
                      synthetic_vocab: int = GPT2_VOCAB, synthetic_exponent: float = 0.95,
                      seed: int = 0) -> TokenSplits:
    """Load (and cache as .npz under ``cache_dir``) the train/val/test token streams."""
    data_root = Path(data_root)
    if data not in ("auto", "real", "standin", "synthetic"):
        raise ValueError(f"data must be auto, real, standin or synthetic, got {data!r}")
    if data == "synthetic":
        key = {"src": "synthetic", "sizes": list(synthetic_sizes), "v": synthetic_vocab,
               "s": synthetic_exponent, "seed": seed, "format": 1}
    else:
        key = {"src": data, "tok": tokenizer, "word_vocab": word_vocab, "root": str(data_root.resolve()), "format": 1}
    path = _cache_file(Path(cache_dir), key) if cache_dir else None
    if path is not None and path.is_file():
        z = np.load(path, allow_pickle=False)
        return TokenSplits(z["train"], z["val"], z["test"], int(z["vocab_size"]), str(z["data_source"]), str(z["tokenizer"]))

    if data == "synthetic":
        n_tr, n_va, n_te = synthetic_sizes
        stream = zipf_stream(n_tr + n_va + n_te, synthetic_vocab, synthetic_exponent, seed=seed)
        out = TokenSplits(stream[:n_tr], stream[n_tr:n_tr + n_va], stream[n_tr + n_va:], synthetic_vocab,
                          f"synthetic:zipf{synthetic_exponent:g}", "none")
    else:
        texts = wikitext_text(data_root) if data in ("auto", "real") else None
        if texts is None and data == "real":
            raise DataUnavailable(f"WikiText-2 raw not found under {data_root / 'wikitext-2-raw'} and the HF hub "
                                  "download failed (offline?)")
        source = "wikitext-2-raw-v1"
        if texts is None:
            texts, source = standin_text()
        toks, vocab, tok_name = tokenize(texts, tokenizer, data_root, word_vocab)
        out = TokenSplits(toks["train"], toks["val"], toks["test"], vocab, source, tok_name)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}.npz")
        np.savez(tmp, train=out.train, val=out.val, test=out.test, vocab_size=out.vocab_size,
                 data_source=out.data_source, tokenizer=out.tokenizer)
        os.replace(tmp, path)
    return out
