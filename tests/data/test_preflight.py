"""No silent stand-ins: at full scale (or with data: real / tokenizer: gpt2) a missing dataset stops
the run before Ray starts, with exit 2 and one line naming the dataset, where it was looked for and
how to get it; a stand-in or substitute asked for on purpose, or below full scale, does not."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from workloads.data import DataMissing, at_scale, locate, require
from workloads.data.locate import wikitext_files
from tests.processes import overnight_subprocess

ROOT = Path(__file__).resolve().parents[2]

# (study, dataset as the error names it, a path it was looked in, relative to the data root, a
# phrase of how to get it). Families whose workloads have no preflight hook yet are expected to
# fail (strict: once the hook is there, the mark must go).
FAMILIES = [
    pytest.param("ramlm_quick", "WikiText-2", "wikitext-2-raw/wiki.{train,valid,test}.raw", "wikitext-2-raw-v1",
                 id="ramlm-wikitext2"),
    pytest.param("credit_cifar", "CIFAR-10", "cifar-10-batches-py", "cifar-10-python.tar.gz", id="creditbridge-cifar10"),
    pytest.param("hydra_transformer", "tinyshakespeare", "tinyshakespeare/input.txt", "char-rnn",
                 id="quantcorr-tinyshakespeare"),
    pytest.param("geometry", "tinyshakespeare", "tinyshakespeare/input.txt", "char-rnn",
                 id="geometry-tinyshakespeare"),
    pytest.param("hydra_autoencoder", "MNIST", "MNIST/raw", "torchvision", id="quantcorr-mnist"),
]


def overnight(*args, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    """`overnight ...` as a user runs it offline (exit code and stderr as they are)."""
    env = {**os.environ, "OVERNIGHT_OFFLINE": "1", **(env_extra or {})}
    return overnight_subprocess(*args, env=env, timeout=300)


@pytest.mark.parametrize("study,dataset,looked,how", FAMILIES)
def test_full_scale_without_the_dataset_exits_2_in_one_line(tmp_path, study, dataset, looked, how):
    empty = tmp_path / "empty"
    empty.mkdir()
    p = overnight("run", study, "--scale", "full", "--data-root", empty, "--dry-run", "--results", tmp_path / "res")
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2, p.stderr
    assert len(lines) == 1, p.stderr
    line = lines[0]
    assert line.startswith("overnight: error: ") and "Traceback" not in p.stderr
    assert dataset in line and str(empty / looked) in line and how in line, line
    assert "--set data=standin" in line
    assert not (tmp_path / "res").exists()   # nothing was started or written


def test_the_standin_on_purpose_and_fast_scale_still_run(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    on_purpose = overnight("run", "ramlm_quick", "--scale", "full", "--data-root", empty, "--dry-run",
                           "--results", tmp_path / "res", "--set", "data=standin")
    assert on_purpose.returncode == 0, on_purpose.stderr
    fast = overnight("run", "credit_cifar", "--scale", "fast", "--data-root", empty, "--dry-run",
                     "--results", tmp_path / "res")
    assert fast.returncode == 0, fast.stderr


def test_full_scale_refuses_without_the_gpt2_bpe(tmp_path):
    """WikiText-2 complete (tiny files in the real layout) but no cached BPE and no network."""
    root = tmp_path / "data"
    (root / "wikitext-2").mkdir(parents=True)
    for split in ("train", "valid", "test"):
        (root / "wikitext-2" / f"wiki.{split}.tokens").write_text(" = A = \n the cat sat on the mat \n")
    cache = tmp_path / "tiktoken-empty"
    p = overnight("run", "ramlm_quick", "--scale", "full", "--data-root", root, "--dry-run", "--results",
                  tmp_path / "res", env_extra={"TIKTOKEN_CACHE_DIR": str(cache)})
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert "GPT-2 BPE" in p.stderr and str(cache) in p.stderr and "--set tokenizer=word" in p.stderr
    word = overnight("run", "ramlm_quick", "--scale", "full", "--data-root", root, "--dry-run", "--results",
                     tmp_path / "res", "--set", "tokenizer=word", env_extra={"TIKTOKEN_CACHE_DIR": str(cache)})
    assert word.returncode == 0, word.stderr


# ----------------------------------------------------------------------------- require, unit by unit
@pytest.mark.parametrize("dataset", ["tinyshakespeare", "mnist", "cifar10", "wikitext-2", "gpt2-bpe"])
def test_require_at_each_scale_and_setting(tmp_path, dataset):
    explicit = "gpt2" if dataset == "gpt2-bpe" else "real"
    for scale in ("smoke", "fast"):
        require(dataset, tmp_path, scale, "auto")                  # auto may fall back below full scale
    for value in ("standin", "synthetic", "word"):
        require(dataset, tmp_path, "full", value)                  # a stand-in (or word) on purpose
    for scale, value in (("full", "auto"), ("full", explicit), ("fast", explicit), ("smoke", explicit)):
        with pytest.raises(DataMissing) as e:
            require(dataset, tmp_path, scale, value)
        assert str(tmp_path) in e.value.looked_in and "no download: OVERNIGHT_OFFLINE is set" in e.value.looked_in
        assert e.value.how


def test_a_downloadable_dataset_passes_and_download_off_does_not(tmp_path, monkeypatch):
    monkeypatch.delenv("OVERNIGHT_OFFLINE")
    monkeypatch.setattr(locate, "_connects", lambda host, port, timeout: True)
    for dataset in ("tinyshakespeare", "mnist", "cifar10", "wikitext-2", "gpt2-bpe"):
        require(dataset, tmp_path, "full", "auto")
    with pytest.raises(DataMissing, match="no download: download is off"):
        require("tinyshakespeare", tmp_path, "full", "auto", download=False)
    monkeypatch.setattr(locate, "_connects", lambda host, port, timeout: False)
    with pytest.raises(DataMissing, match="raw.githubusercontent.com unreachable"):
        require("tinyshakespeare", tmp_path, "full", "auto")


def test_real_shared_data_passes_fast_and_is_refused_where_it_falls_short(real_root):
    root = real_root("tinyshakespeare", "fashion-mnist", "wikitext-2")
    require("tinyshakespeare", root, "full", "auto")
    for dataset in ("mnist", "cifar10", "wikitext-2"):
        require(dataset, root, "fast", "auto")
    with pytest.raises(DataMissing, match="Fashion-MNIST in .* is not MNIST"):
        require("mnist", root, "full", "auto")
    with pytest.raises(DataMissing, match="Fashion-MNIST in .* is not CIFAR-10"):
        require("cifar10", root, "full", "auto")
    with pytest.raises(DataMissing, match="only the validation and test splits are in .*; full scale and data: real need"):
        require("wikitext-2", root, "full", "auto")
    # `data: real` is the whole dataset at every scale: validation + test only is for `auto`, disclosed
    with pytest.raises(DataMissing, match="only the validation and test splits"):
        require("wikitext-2", root, "fast", "real")


def test_wikitext_layouts_raw_first_then_tokenised(tmp_path):
    def write(folder, pattern, splits=("train", "valid", "test")):
        (tmp_path / folder).mkdir(exist_ok=True)
        for s in splits:
            (tmp_path / folder / pattern.format(s)).write_text("a b\n")

    write("wikitext-2", "{}.txt", ("valid", "test"))
    w = wikitext_files(tmp_path)
    assert w.source == "wikitext-2-v1 tokenised" and not w.complete and set(w.files) == {"val", "test"}
    write("wikitext-2", "wiki.{}.tokens")
    w = wikitext_files(tmp_path)
    assert w.complete and w.files["train"].name == "wiki.train.tokens"
    write("wikitext-2-raw", "wiki.{}.raw")
    w = wikitext_files(tmp_path)
    assert w.complete and w.source == "wikitext-2-raw-v1"


def test_bpe_cache_is_found_by_tiktoken_file_names(tmp_path, monkeypatch):
    cache = tmp_path / "tk"
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))
    with pytest.raises(DataMissing):
        require("gpt2-bpe", tmp_path, "full", "auto")
    cache.mkdir()
    for name in locate.bpe_cache_names():
        (cache / name).write_bytes(b"x")
    require("gpt2-bpe", tmp_path, "full", "auto")
    assert locate.find_bpe_cache(tmp_path) == cache


def test_workload_hooks(tmp_path):
    from workloads.creditbridge import CreditBridge
    from workloads.ramlm import RamLM

    CreditBridge.preflight({"task": "synthetic", "data": "auto"}, tmp_path, "full")
    with pytest.raises(DataMissing, match="CIFAR-10"):
        CreditBridge.preflight({"task": "cifar10", "data": "auto"}, tmp_path, "full")
    CreditBridge.preflight({"task": "cifar10", "data": "standin"}, tmp_path, "full")
    RamLM.preflight({"data": "synthetic", "tokenizer": "gpt2"}, tmp_path, "full")
    RamLM.preflight({"data": "standin", "tokenizer": "auto"}, tmp_path, "full")
    RamLM.preflight({"data": "auto", "tokenizer": "auto"}, tmp_path, "fast")
    with pytest.raises(DataMissing, match="GPT-2 BPE"):          # asked for by name: needed at every scale
        RamLM.preflight({"data": "standin", "tokenizer": "gpt2"}, tmp_path, "fast")
    with pytest.raises(DataMissing, match="WikiText-2"):
        RamLM.preflight({"data": "real", "tokenizer": "word"}, tmp_path, "fast")


def test_at_scale_makes_auto_strict_at_full():
    assert at_scale("auto", "full") == "real" and at_scale("auto", "fast") == "auto"
    assert at_scale("auto", "full", real="gpt2") == "gpt2" and at_scale("standin", "full") == "standin"
