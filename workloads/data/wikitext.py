"""Token streams for language-model workloads (RAM-LM, docs/studies/ramlm.md, 'Data and tokenizers').

Sources (``data`` config key):
  real       WikiText-2 from local files (workloads/data/locate.py, WIKITEXT_LAYOUTS): the raw layout
             ``<data_root>/wikitext-2-raw/wiki.{train,valid,test}.raw`` (data_source
             ``wikitext-2-raw-v1``), else the tokenised one, ``<data_root>/wikitext-2/wiki.{train,valid,
             test}.tokens`` or ``<data_root>/wikitext-2/{train,valid,test}.txt`` (``wikitext-2-v1
             tokenised``: ``<unk>`` for rare words, `` @-@ `` for hyphens); else HF ``datasets``
             (``wikitext`` / ``wikitext-2-raw-v1``, cached under ``<data_root>/hf``; downloads when
             online). Each split's lines are joined with one space.
             When only the validation and test splits are there (no train split, and no download), the
             splits are drawn from them, disjoint: train = the validation split, validation = the first
             half of the test split's tokens, test = the second half; ``data_source`` says exactly that
             (VALID_TEST_ONLY). A fast-scale study then takes its 50K train tokens from validation and
             its 10K/10K validation/test tokens from the two halves of test. Full scale refuses this
             (the preflight check, ``workloads.data.require``).
  standin    an offline English corpus: ``workloads/data/corpus/*.txt`` when it holds at least 300 KB,
             else the Python documentation text bundled with the interpreter (``pydoc_data.topics``,
             about 465 KB of English prose and code).
  synthetic  a seeded Zipf-distributed stream with first-order structure (for benchmarks).
  auto       real if found or downloadable, else standin.

Tokenizers (``tokenizer`` key):
  gpt2       the GPT-2 BPE through ``tiktoken`` (encoding ``gpt2``, no special tokens), or through
             ``tokenizers`` when a ``gpt2`` tokenizer.json is under ``<data_root>/gpt2``. tiktoken
             fetches its BPE files (vocab.bpe, encoder.json) from the internet on first use and caches
             them: in $TIKTOKEN_CACHE_DIR when set, else ``<data_root>/tiktoken`` (tiktoken's own
             default cache is read too). Offline and uncached, gpt2 is unavailable.
  word       a word-level tokenizer trained on the train split (most frequent words, ``<unk>`` for
             the rest; ids in alphabetical order, so id order is not frequency order, as in GPT-2).
             WikiText's own ``<unk>`` and ``@-@``, ``@,@``, ``@.@`` markers are single words.
  auto       gpt2 when available, else word, recorded as ``word<V> (GPT-2 BPE unavailable)``. At full
             scale the preflight check refuses to start without the BPE.

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

from . import locate

HF_SPLITS = {"train": "train", "val": "validation", "test": "test"}
GPT2_VOCAB = 50257
MIN_CORPUS_BYTES = 300_000
VALID_TEST_ONLY = ("{source}, validation and test splits only: train = the validation split; validation = "
                   "the first half of the test split, test = its second half (disjoint)")
GPT2_FALLBACK = " (GPT-2 BPE unavailable)"


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
def _read_split(path: Path) -> str:
    return " ".join(path.read_text(encoding="utf-8").splitlines())


def wikitext_sources(data_root: Path, download: bool = True) -> tuple[dict[str, str], str] | None:
    """(texts, data_source): a complete local layout, else the HF download, else a local layout with
    only the validation and test splits (texts ``val`` and ``test``, no ``train``); None if none."""
    found = locate.wikitext_files(Path(data_root))
    if found is not None and found.complete:
        return {k: _read_split(p) for k, p in found.files.items()}, found.source
    texts = _hf_wikitext(Path(data_root)) if download else None
    if texts is not None:
        return texts, "wikitext-2-raw-v1"
    if found is not None:
        return {k: _read_split(p) for k, p in found.files.items()}, VALID_TEST_ONLY.format(source=found.source)
    return None


def wikitext_text(data_root: Path, download: bool = True) -> dict[str, str] | None:
    """The three WikiText-2 splits as joined strings, or None if not all three are available."""
    got = wikitext_sources(data_root, download)
    return got[0] if got is not None and "train" in got[0] else None


def _hf_wikitext(data_root: Path) -> dict[str, str] | None:
    if locate.offline() or not _host_resolves("huggingface.co"):
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

    pattern = re.compile(r"<unk>|@[-,.]@|\w+|[^\w\s]")

    def __init__(self, vocab: list[str]):
        self.vocab = vocab
        self.index = {w: i for i, w in enumerate(vocab)}

    @classmethod
    def train(cls, text: str, vocab_size: int) -> "WordTokenizer":
        from collections import Counter  # noqa: PLC0415
        counts = Counter(cls.pattern.findall(text))
        counts.pop("<unk>", None)   # WikiText's own <unk> is the tokenizer's id 0
        kept = [w for w, _ in counts.most_common(max(1, vocab_size - 1))]
        return cls(["<unk>"] + sorted(kept))

    def encode(self, text: str) -> np.ndarray:
        return np.fromiter((self.index.get(w, 0) for w in self.pattern.findall(text)), dtype=np.int64)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)


class _CacheDir:
    """Point tiktoken at one cache directory while the encoding loads (tiktoken reads the variable
    on each load; the loaded encoding is kept in-process)."""

    def __init__(self, path: Path):
        self.path, self.before = str(path), None

    def __enter__(self):
        self.before = os.environ.get("TIKTOKEN_CACHE_DIR")
        os.environ["TIKTOKEN_CACHE_DIR"] = self.path

    def __exit__(self, *exc):
        if self.before is None:
            os.environ.pop("TIKTOKEN_CACHE_DIR", None)
        else:
            os.environ["TIKTOKEN_CACHE_DIR"] = self.before


def gpt2_encoder(data_root: Path):
    """A callable str -> int64 ids for the GPT-2 BPE, or raise DataUnavailable saying what is missing.

    tiktoken reads its cached BPE files (locate.bpe_cache_dirs) without network; uncached, it
    downloads them into $TIKTOKEN_CACHE_DIR or ``<data_root>/tiktoken``, tried only when the host
    answers (tiktoken's own request has no timeout)."""
    problems = []
    try:
        import tiktoken  # noqa: PLC0415
    except ImportError:
        problems.append("the 'tiktoken' package is not installed")
    else:
        cached = locate.find_bpe_cache(Path(data_root))
        target = cached or locate.bpe_cache_dirs(Path(data_root))[0]
        if cached is None and not locate.reachable(locate.HOSTS["gpt2-bpe"]):
            problems.append("tiktoken's gpt2 BPE files are not cached in "
                            + " or ".join(str(d) for d in locate.bpe_cache_dirs(Path(data_root)))
                            + (" and OVERNIGHT_OFFLINE is set" if locate.offline()
                               else f" and {locate.HOSTS['gpt2-bpe']} is unreachable"))
        else:
            try:
                with _CacheDir(target):
                    enc = tiktoken.get_encoding("gpt2")
                return lambda s: np.asarray(enc.encode_ordinary(s), dtype=np.int64)
            except Exception as exc:  # download failed or a corrupt cache
                problems.append(f"tiktoken could not load the gpt2 BPE files ({type(exc).__name__}: "
                                f"{str(exc).splitlines()[0][:120] if str(exc) else ''})")
    tok_file = Path(data_root) / "gpt2" / "tokenizer.json"
    try:
        from tokenizers import Tokenizer  # noqa: PLC0415
        if tok_file.is_file():
            tok = Tokenizer.from_file(str(tok_file))
            return lambda s: np.asarray(tok.encode(s, add_special_tokens=False).ids, dtype=np.int64)
        problems.append(f"no {tok_file} for the 'tokenizers' package")
    except ImportError:
        pass   # the tokenizers route is optional; tiktoken is the dependency
    raise DataUnavailable("GPT-2 BPE unavailable: " + "; ".join(problems)
                          + f". Run once online (tiktoken caches the files) or copy the cached files into "
                          f"{Path(data_root) / 'tiktoken'}, or use tokenizer: word")


def tokenize(texts: dict[str, str], tokenizer: str, data_root: Path, word_vocab: int) -> tuple[dict[str, np.ndarray], int, str]:
    """(token ids per split, vocabulary size, tokenizer name). ``auto`` without the GPT-2 BPE uses
    the word tokenizer and says so in the name: ``word<V> (GPT-2 BPE unavailable)``."""
    if tokenizer not in ("auto", "gpt2", "word"):
        raise ValueError(f"tokenizer must be auto, gpt2 or word, got {tokenizer!r}")
    fallback = ""
    if tokenizer in ("auto", "gpt2"):
        try:
            enc = gpt2_encoder(data_root)
            return {k: enc(v) for k, v in texts.items()}, GPT2_VOCAB, "gpt2"
        except DataUnavailable:
            if tokenizer == "gpt2":
                raise
            fallback = GPT2_FALLBACK
    wt = WordTokenizer.train(texts["train"], word_vocab)
    return {k: wt.encode(v) for k, v in texts.items()}, wt.vocab_size, f"word{wt.vocab_size}{fallback}"


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
    else:   # the files found (and the cached BPE) are part of the key: new data is never hidden by old tokens
        key = {"src": data, "tok": tokenizer, "word_vocab": word_vocab, "root": str(data_root.resolve()),
               "files": locate.fingerprint("wikitext-2", data_root), "bpe": locate.fingerprint("gpt2-bpe", data_root),
               "format": 2}
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
        got = wikitext_sources(data_root) if data in ("auto", "real") else None
        if got is None and data == "real":
            raise DataUnavailable(f"WikiText-2 not found in {', '.join(locate.wikitext_looked_in(data_root))} and "
                                  "the HF hub download failed (offline?)")
        texts, source = got if got is not None else standin_text()
        if "train" in texts:
            toks, vocab, tok_name = tokenize(texts, tokenizer, data_root, word_vocab)
            out = TokenSplits(toks["train"], toks["val"], toks["test"], vocab, source, tok_name)
        else:   # validation and test only: train = validation, val / test = the halves of test
            toks, vocab, tok_name = tokenize({"train": texts["val"], "test": texts["test"]}, tokenizer, data_root,
                                             word_vocab)
            half = len(toks["test"]) // 2
            out = TokenSplits(toks["train"], toks["test"][:half], toks["test"][half:], vocab, source, tok_name)
    if path is not None and not out.tokenizer.endswith(GPT2_FALLBACK):   # a fallback is not cached
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}.npz")
        np.savez(tmp, train=out.train, val=out.val, test=out.test, vocab_size=out.vocab_size,
                 data_source=out.data_source, tokenizer=out.tokenizer)
        os.replace(tmp, path)
    return out
