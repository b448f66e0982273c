"""A stage key means one thing: the RAM-LM token stage is keyed on what ``auto``
resolved to, the files read and the scale, so a full-scale trial is never handed the fast run's
word-tokenised validation+test splits from the stage cache."""
from __future__ import annotations

import pytest

from orchestrator.study.contract import LocalContext
from tests.conftest import require_native
from workloads.data.wikitext import VALID_TEST_ONLY, DataUnavailable

require_native()  # the RAM-LM memory is the native extension: fails (never skips) without it

SMALL = dict(data="auto", tokenizer="auto", train_tokens=2500, val_tokens=500, test_tokens=500,
             tiers="20,6,12;80,4,8;rest,2,6", context=3, top_k=50, calibration_examples=200, optimize=False)


class RecordingContext(LocalContext):
    """A LocalContext that keeps the keys its stages were asked for."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.keys = []

    def stage(self, key, build):
        self.keys.append(dict(key))
        return super().stage(key, build)


def test_full_refuses_rather_than_reuse_the_fast_stage(real_root, tmp_path):
    from workloads.ramlm import RamLM

    root = real_root("wikitext-2")       # validation + test only, no BPE: what fast scale may use
    fast = RecordingContext(scale="fast", data_root=root, cache_dir=tmp_path / "cache")
    m = RamLM().run(RamLM.Params.model_validate(SMALL), fast)
    assert m["data_source"] == VALID_TEST_ONLY.format(source="wikitext-2-v1 tokenised")
    assert m["tokenizer_name"] == "word8192 (GPT-2 BPE unavailable)"
    (key,) = fast.keys
    assert key["data"] == "valid-test" and key["tokenizer"] == "word-fallback" and key["scale"] == "fast"
    assert "auto" not in key.values()
    # the same stage cache and token cache, at full scale, with the full data missing
    full = RecordingContext(scale="full", data_root=root, cache_dir=tmp_path / "cache", _stages=fast._stages)
    with pytest.raises(DataUnavailable, match="WikiText-2"):
        RamLM().run(RamLM.Params.model_validate(SMALL), full)
    (full_key,) = full.keys
    assert full_key["data"] == "hf" and full_key["tokenizer"] == "gpt2" and full_key["scale"] == "full"


def test_the_bpe_arriving_changes_the_key(real_root, tmp_path):
    from workloads.ramlm import RamLM

    root = real_root("wikitext-2")
    first = RecordingContext(scale="fast", data_root=root, cache_dir=tmp_path / "cache")
    assert RamLM().run(RamLM.Params.model_validate(SMALL), first)["tokenizer_name"].startswith("word")
    real_root("gpt2-bpe")                 # the same data root now holds the BPE files
    second = RecordingContext(scale="fast", data_root=root, cache_dir=tmp_path / "cache", _stages=first._stages)
    m = RamLM().run(RamLM.Params.model_validate(SMALL), second)
    assert (m["tokenizer_name"], m["vocab_size"], m["bits_per_token"]) == ("gpt2", 50257, 16)
    assert second.keys[0]["tokenizer"] == "gpt2" and "bpe" in second.keys[0]
