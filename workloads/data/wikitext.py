"""Token streams for language-model workloads (RAM-LM, docs/studies/ramlm.md, 'Data and tokenizers').

Sources (``data`` config key):
  real       WikiText-2 from local files (workloads/data/locate.py, WIKITEXT_LAYOUTS): the raw layout
             ``<data_root>/wikitext-2-raw/wiki.{train,valid,test}.raw`` (data_source
             ``wikitext-2-raw-v1``), else the tokenised one, ``<data_root>/wikitext-2/wiki.{train,valid,
             test}.tokens`` or ``<data_root>/wikitext-2/{train,valid,test}.txt`` (``wikitext-2-v1
             tokenised``: ``<unk>`` for rare words, `` @-@ `` for hyphens); else HF ``datasets``
             (``wikitext`` / ``wikitext-2-raw-v1``, cached under ``<data_root>/hf``; downloads when
             online). Each split's lines are joined with one space. ``real`` is the whole dataset at
             every scale: without the train split and the download it refuses.
  standin    an offline English corpus: ``workloads/data/corpus/*.txt`` when it holds at least 300 KB,
             else the Python documentation text bundled with the interpreter (``pydoc_data.topics``,
             about 465 KB of English prose and code).
  synthetic  a seeded Zipf-distributed stream with first-order structure (for benchmarks).
  auto       real if found or downloadable; else, when only the validation and test splits are on
             disk, splits drawn from them, disjoint: train = the validation split, validation = the
             first half of the test split's tokens, test = the second half, and ``data_source`` says
             exactly that (VALID_TEST_ONLY); else standin. A fast-scale study then takes its 50K train
             tokens from validation and its 10K/10K validation/test tokens from the two halves of
             test. Full scale maps auto to real (locate.at_scale), so it refuses this layout.

Tokenizers (``tokenizer`` key):
  gpt2       the GPT-2 BPE (50,257 tokens) through ``tiktoken`` (encoding ``gpt2``, no special
             tokens). First from the original files in ``<data_root>/gpt2-bpe/`` (vocab.bpe,
             encoder.json; their sha256 must be the originals', else they are refused), offline; else
             from tiktoken's cache ($TIKTOKEN_CACHE_DIR when set, else ``<data_root>/tiktoken`` and
             tiktoken's default cache), else tiktoken's download; or through ``tokenizers`` when a
             ``gpt2`` tokenizer.json is under ``<data_root>/gpt2``. Offline without the files,
             gpt2 is unavailable.
  word       a word-level tokenizer trained on the train split (most frequent words, ``<unk>`` for
             the rest; ids in alphabetical order, so id order is not frequency order, as in GPT-2).
             WikiText's own ``<unk>`` and ``@-@``, ``@,@``, ``@.@`` markers are single words.
  auto       gpt2 when available, else word, recorded as ``word<V> (GPT-2 BPE unavailable)``. At full
             scale the preflight check refuses to start without the BPE.

``resolve`` decides once what ``auto`` means (``Sources``) before anything is loaded; the cache key
holds the decision, never ``auto``, and the load delivers exactly it or raises. Every result records
``data_source`` and ``tokenizer`` so each row says what it ran on.
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


class DataCorrupt(DataUnavailable):
    """A data file is there but is not the one named (its sha256 differs): refused, never replaced
    by a fallback."""


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


def wikitext_sources(data_root: Path, download: bool = True, *, layout: str | None = None
                     ) -> tuple[dict[str, str], str] | None:
    """(texts, data_source) of one WikiText-2 layout (see ``Sources``): ``local`` (all three splits
    on disk), ``hf`` (the hub download) or ``valid-test`` (the validation and test splits only:
    texts ``val`` and ``test``, no ``train``). None when that layout cannot be had. Without
    ``layout``, the first of them that can (``auto``'s order)."""
    found = locate.wikitext_files(Path(data_root))
    if layout in (None, "local") and found is not None and found.complete:
        return {k: _read_split(p) for k, p in found.files.items()}, found.source
    if layout in (None, "hf"):
        texts = _hf_wikitext(Path(data_root)) if download else None
        if texts is not None:
            return texts, "wikitext-2-raw-v1"
    if layout in (None, "valid-test") and found is not None and {"val", "test"} <= set(found.files):
        return ({k: _read_split(found.files[k]) for k in ("val", "test")},
                VALID_TEST_ONLY.format(source=found.source))
    return None


def _hf_wikitext(data_root: Path) -> dict[str, str] | None:
    if locate.offline() or not _host_resolves("huggingface.co"):
        return None   # offline: fail fast instead of the hub client's minute of retries
    try:
        import datasets
        ds = datasets.load_dataset("wikitext", "wikitext-2-raw-v1", cache_dir=str(Path(data_root) / "hf"))
        return {k: " ".join(ds[s]["text"]) for k, s in HF_SPLITS.items()}
    except Exception:  # noqa: BLE001 - offline, hub unreachable or datasets failing: the caller falls back
        return None


def _host_resolves(host: str) -> bool:
    import socket
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
        import pydoc_data.topics as topics  # ships with CPython
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
        from collections import Counter
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

    def __init__(self, path: Path | str):
        self.path, self.before = str(path), None

    def __enter__(self):
        self.before = os.environ.get("TIKTOKEN_CACHE_DIR")
        os.environ["TIKTOKEN_CACHE_DIR"] = self.path

    def __exit__(self, *exc):
        if self.before is None:
            os.environ.pop("TIKTOKEN_CACHE_DIR", None)
        else:
            os.environ["TIKTOKEN_CACHE_DIR"] = self.before


def gpt2_from_files(files: dict[str, Path]):
    """tiktoken's ``gpt2`` encoding built from the two plain BPE files (``<data_root>/gpt2-bpe``):
    the same ranks, pattern and special token as tiktoken_ext/openai_public.py, read from disk with
    no network and no cache written. Refuses files whose sha256 is not the original's."""
    bad = locate.bpe_mismatches(files)
    if bad:
        raise DataCorrupt("GPT-2 BPE refused: " + "; ".join(bad))
    import tiktoken
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks
    from tiktoken_ext.openai_public import ENDOFTEXT, r50k_pat_str
    with _CacheDir(""):   # an empty TIKTOKEN_CACHE_DIR: read the paths as given, copy them nowhere
        ranks = data_gym_to_mergeable_bpe_ranks(
            vocab_bpe_file=str(files["vocab.bpe"]), encoder_json_file=str(files["encoder.json"]),
            vocab_bpe_hash=locate.GPT2_BPE_SHA256["vocab.bpe"],
            encoder_json_hash=locate.GPT2_BPE_SHA256["encoder.json"])
    return tiktoken.Encoding(name="gpt2", pat_str=r50k_pat_str, mergeable_ranks=ranks,
                             special_tokens={ENDOFTEXT: GPT2_VOCAB - 1}, explicit_n_vocab=GPT2_VOCAB)


def gpt2_encoder(data_root: Path):
    """A callable str -> int64 ids for the GPT-2 BPE, or raise DataUnavailable saying what is missing.

    In order: the plain files ``<data_root>/gpt2-bpe/{vocab.bpe,encoder.json}`` (sha256 checked;
    other files are refused, never replaced by a download); tiktoken's cached files
    (locate.bpe_cache_dirs), read without network; tiktoken's download into $TIKTOKEN_CACHE_DIR or
    ``<data_root>/tiktoken``, tried only when the host answers (tiktoken's own request has no
    timeout); a ``gpt2`` tokenizer.json for the ``tokenizers`` package."""
    problems = []
    try:
        import tiktoken
    except ImportError:
        problems.append("the 'tiktoken' package is not installed")
    else:
        plain = locate.bpe_files(Path(data_root))
        if plain is not None:
            enc = gpt2_from_files(plain)
            return lambda s: np.asarray(enc.encode_ordinary(s), dtype=np.int64)
        cached = locate.find_bpe_cache(Path(data_root))
        target = cached or locate.bpe_cache_dirs(Path(data_root))[0]
        if cached is None and not locate.reachable(locate.HOSTS["gpt2-bpe"]):
            problems.append(f"no {Path(data_root) / locate.GPT2_BPE_DIR}/{{vocab.bpe,encoder.json}}, tiktoken's "
                            "gpt2 BPE files are not cached in "
                            + " or ".join(str(d) for d in locate.bpe_cache_dirs(Path(data_root)))
                            + (" and OVERNIGHT_OFFLINE is set" if locate.offline()
                               else f" and {locate.HOSTS['gpt2-bpe']} is unreachable"))
        else:
            try:
                with _CacheDir(target):
                    enc = tiktoken.get_encoding("gpt2")
                return lambda s: np.asarray(enc.encode_ordinary(s), dtype=np.int64)
            except Exception as exc:  # noqa: BLE001 - download failed or a corrupt cache
                problems.append(f"tiktoken could not load the gpt2 BPE files ({type(exc).__name__}: "
                                f"{str(exc).splitlines()[0][:120] if str(exc) else ''})")
    tok_file = Path(data_root) / "gpt2" / "tokenizer.json"
    try:
        from tokenizers import Tokenizer
        if tok_file.is_file():
            tok = Tokenizer.from_file(str(tok_file))
            return lambda s: np.asarray(tok.encode(s, add_special_tokens=False).ids, dtype=np.int64)
        problems.append(f"no {tok_file} for the 'tokenizers' package")
    except ImportError:
        pass   # the tokenizers route is optional; tiktoken is the dependency
    raise DataUnavailable("GPT-2 BPE unavailable: " + "; ".join(problems)
                          + f". Put the original vocab.bpe and encoder.json in {Path(data_root) / locate.GPT2_BPE_DIR}"
                          f" (or run once online: tiktoken caches them), or use tokenizer: word")


def tokenize(texts: dict[str, str], tokenizer: str, data_root: Path, word_vocab: int) -> tuple[dict[str, np.ndarray], int, str]:
    """(token ids per split, vocabulary size, tokenizer name) with a resolved tokenizer (see
    ``Sources``): ``gpt2`` (raises when the BPE cannot be loaded: no fallback here), ``word``, or
    ``word-fallback``, the word tokenizer named ``word<V> (GPT-2 BPE unavailable)``."""
    if tokenizer == "gpt2":
        enc = gpt2_encoder(data_root)
        return {k: enc(v) for k, v in texts.items()}, GPT2_VOCAB, "gpt2"
    if tokenizer not in ("word", "word-fallback"):
        raise ValueError(f"tokenizer must be gpt2, word or word-fallback once resolved, got {tokenizer!r}")
    wt = WordTokenizer.train(texts["train"], word_vocab)
    name = f"word{wt.vocab_size}" + (GPT2_FALLBACK if tokenizer == "word-fallback" else "")
    return {k: wt.encode(v) for k, v in texts.items()}, wt.vocab_size, name


# ----------------------------------------------------------------------------- what auto means
@dataclass(frozen=True)
class Sources:
    """The data and tokenizer a load will use, decided once, before anything is loaded or cached,
    so that ``auto`` never reaches a cache key and a load never falls back after the decision.

    data:      ``local`` (WikiText-2 with its three splits on disk), ``hf`` (the hub download),
               ``valid-test`` (the validation and test splits only, disclosed), ``standin``, ``synthetic``
    tokenizer: ``gpt2``, ``word``, ``word-fallback`` (auto without the BPE), ``none`` (synthetic)
    """

    data: str
    tokenizer: str

    def key(self, data_root: Path) -> dict:
        """What identifies the token streams: these choices and the files they read."""
        key = {"data": self.data, "tokenizer": self.tokenizer}
        if self.data in ("local", "valid-test"):
            key["files"] = locate.fingerprint("wikitext-2", data_root)
        if self.tokenizer == "gpt2":
            key["bpe"] = locate.fingerprint("gpt2-bpe", data_root)
        return key


def resolve(data: str, tokenizer: str, data_root: Path | str, download: bool = True) -> Sources:
    """What ``data`` and ``tokenizer`` mean here (the scale's ``auto`` already mapped by
    locate.at_scale). ``real`` is the whole WikiText-2 (on disk, else the download); ``auto`` is
    that, else the validation and test splits on disk, else the stand-in. ``gpt2`` is the BPE;
    ``auto`` is the BPE when it is here or downloadable, else the word tokenizer, disclosed."""
    root = Path(data_root)
    if data not in ("auto", "real", "standin", "synthetic"):
        raise ValueError(f"data must be auto, real, standin or synthetic, got {data!r}")
    if tokenizer not in ("auto", "gpt2", "word"):
        raise ValueError(f"tokenizer must be auto, gpt2 or word, got {tokenizer!r}")
    if data == "synthetic":
        return Sources("synthetic", "none")
    found = locate.wikitext_files(root)
    if data == "standin":
        layout = "standin"
    elif found is not None and found.complete:
        layout = "local"
    elif data == "real" or (download and not locate.offline() and _host_resolves("huggingface.co")
                            and locate.reachable(locate.HOSTS["wikitext-2"])):
        layout = "hf"
    else:
        layout = "valid-test" if found is not None else "standin"
    bad = locate.bpe_refusals(root) if tokenizer != "word" else []
    if bad:   # altered files are refused, never worked around
        raise DataCorrupt("GPT-2 BPE refused: " + "; ".join(bad))
    if tokenizer == "auto":
        bpe = locate.status("gpt2-bpe", root, download=download)
        tokenizer = "gpt2" if bpe.present or bpe.can_download else "word-fallback"
    return Sources(layout, tokenizer)


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
                      seed: int = 0, sources: Sources | None = None) -> TokenSplits:
    """Load (and cache as .npz under ``cache_dir``) the train/val/test token streams of ``sources``
    (default: ``resolve(data, tokenizer, data_root)``). Exactly those sources or DataUnavailable:
    a failed download or tokenizer never turns into another source once resolved."""
    data_root = Path(data_root)
    src = sources or resolve(data, tokenizer, data_root)
    if src.data == "synthetic":
        key = {"src": "synthetic", "sizes": list(synthetic_sizes), "v": synthetic_vocab,
               "s": synthetic_exponent, "seed": seed, "format": 1}
    else:   # the resolved choices and the files they read: new data is never hidden by old tokens
        key = {**src.key(data_root), "word_vocab": word_vocab, "root": str(data_root.resolve()), "format": 3}
    path = _cache_file(Path(cache_dir), key) if cache_dir else None
    if path is not None and path.is_file():
        z = np.load(path, allow_pickle=False)
        return TokenSplits(z["train"], z["val"], z["test"], int(z["vocab_size"]), str(z["data_source"]), str(z["tokenizer"]))

    if src.data == "synthetic":
        n_tr, n_va, n_te = synthetic_sizes
        stream = zipf_stream(n_tr + n_va + n_te, synthetic_vocab, synthetic_exponent, seed=seed)
        out = TokenSplits(stream[:n_tr], stream[n_tr:n_tr + n_va], stream[n_tr + n_va:], synthetic_vocab,
                          f"synthetic:zipf{synthetic_exponent:g}", "none")
    else:
        got = standin_text() if src.data == "standin" else wikitext_sources(data_root, layout=src.data)
        if got is None:
            what = {"local": "its three splits on disk", "hf": "the HF hub download",
                    "valid-test": "its validation and test splits on disk"}[src.data]
            raise DataUnavailable(f"WikiText-2 ({what}) is not available: looked in "
                                  f"{', '.join(locate.wikitext_looked_in(data_root))}"
                                  + ("; the HF hub download failed (offline?)" if src.data == "hf" else ""))
        texts, source = got
        if "train" in texts:
            toks, vocab, tok_name = tokenize(texts, src.tokenizer, data_root, word_vocab)
            out = TokenSplits(toks["train"], toks["val"], toks["test"], vocab, source, tok_name)
        else:   # validation and test only: train = validation, val / test = the halves of test
            toks, vocab, tok_name = tokenize({"train": texts["val"], "test": texts["test"]}, src.tokenizer,
                                             data_root, word_vocab)
            half = len(toks["test"]) // 2
            out = TokenSplits(toks["train"], toks["test"][:half], toks["test"][half:], vocab, source, tok_name)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}.npz")
        np.savez(tmp, train=out.train, val=out.val, test=out.test, vocab_size=out.vocab_size,
                 data_source=out.data_source, tokenizer=out.tokenizer)
        os.replace(tmp, path)
    return out
