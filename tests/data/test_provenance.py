"""The report header's data lines (orchestrator/results/provenance.py): the data source and the tokenizer
each row recorded, counted; stand-ins, substitutes, part of a dataset, synthetic streams and word
tokenizers named as not the study's dataset; the columns it reads are the ones the workloads declare."""
from __future__ import annotations

import pandas as pd
import pytest

from orchestrator.results.provenance import data_summary


def test_sources_and_tokenizers_are_counted():
    rows = pd.DataFrame({
        "data_source": ["wikitext-2-raw-v1"] * 3 + ["standin:pydoc_topics"],
        "tokenizer_name": ["gpt2", "gpt2", "word8192 (GPT-2 BPE unavailable)", "word8192 (GPT-2 BPE unavailable)"],
        "tokenizer": ["auto"] * 4,          # the parameter (what was asked for) is not what was used
        "data": ["auto"] * 4,
    })
    assert data_summary(rows) == [
        "Data: wikitext-2-raw-v1 (3 rows), standin:pydoc_topics (1 row); "
        "tokenizer: gpt2 (2 rows), word8192 (GPT-2 BPE unavailable) (2 rows)",
        "Not the study's dataset: standin:pydoc_topics (1 row) ran on an offline stand-in; "
        "word8192 (GPT-2 BPE unavailable) (2 rows) is a word tokenizer, not the study's GPT-2 BPE.",
    ]


def test_one_source_without_tokenizer():
    rows = pd.DataFrame({"data_source": ["tinyshakespeare"] * 18, "loss": range(18)})
    assert data_summary(rows) == ["Data: tinyshakespeare (18 rows)"]


def test_substitutes_missing_values_and_no_column():
    rows = pd.DataFrame({"data_source": ["fashion-mnist (substitute for CIFAR-10)"] * 14 + [None]})
    assert data_summary(rows) == [
        "Data: fashion-mnist (substitute for CIFAR-10) (14 rows), not recorded (1 row)",
        "Not the study's dataset: fashion-mnist (substitute for CIFAR-10) (14 rows) ran on a disclosed substitute.",
    ]
    assert data_summary(pd.DataFrame({"loss": [1.0, 2.0]})) == ["Data: not recorded by the workload (2 rows)"]
    assert data_summary(pd.DataFrame()) == []
    arrow = pd.DataFrame({"data_source": pd.Series(["a", None, "a"], dtype="string")})
    assert data_summary(arrow) == ["Data: a (2 rows), not recorded (1 row)"]


WIKI_PART = ("wikitext-2-v1 tokenised, validation and test splits only: train = the validation split; validation = "
             "the first half of the test split, test = its second half (disjoint)")
MNIST_PART = "mnist test set only (t10k, 10,000 digits; seeded split, rng 0: 8,000 train / 2,000 test, disjoint)"


def test_the_strings_matched_are_the_ones_the_loaders_write():
    from workloads.data.mnist import MNIST_TEST_ONLY_SOURCE
    from workloads.data.wikitext import VALID_TEST_ONLY

    assert VALID_TEST_ONLY.format(source="wikitext-2-v1 tokenised") == WIKI_PART
    assert MNIST_TEST_ONLY_SOURCE == MNIST_PART


@pytest.mark.parametrize("source,tokenizer,note", [
    (WIKI_PART, "gpt2", f"{WIKI_PART} (12 rows) ran on part of the dataset (validation and test splits only)"),
    (MNIST_PART, None, f"{MNIST_PART} (12 rows) ran on part of the dataset (test set only)"),
    ("synthetic:zipf1.1", "none", "synthetic:zipf1.1 (12 rows) ran on a synthetic stream"),
    ("wikitext-2-raw-v1", "word8192", "word8192 (12 rows) is a word tokenizer, not the study's GPT-2 BPE"),
])
def test_each_kind_of_data_that_is_not_the_study_s_own(source, tokenizer, note):
    rows = pd.DataFrame({"data_source": [source] * 12} | ({"tokenizer_name": [tokenizer] * 12} if tokenizer else {}))
    data = f"Data: {source} (12 rows)" + (f"; tokenizer: {tokenizer} (12 rows)" if tokenizer else "")
    assert data_summary(rows) == [data, f"Not the study's dataset: {note}."]


def test_a_mix_names_each_kind_in_order():
    rows = pd.DataFrame({
        "data_source": ["wikitext-2-raw-v1"] * 4 + [WIKI_PART] * 3 + ["synthetic:zipf1.1"] * 2 + ["standin:pydoc_topics"],
        "tokenizer_name": ["gpt2"] * 4 + ["word8192"] * 3 + ["none"] * 2 + ["word8192 (GPT-2 BPE unavailable)"],
    })
    assert data_summary(rows) == [
        f"Data: wikitext-2-raw-v1 (4 rows), {WIKI_PART} (3 rows), synthetic:zipf1.1 (2 rows), "
        "standin:pydoc_topics (1 row); tokenizer: gpt2 (4 rows), word8192 (3 rows), none (2 rows), "
        "word8192 (GPT-2 BPE unavailable) (1 row)",
        "Not the study's dataset: standin:pydoc_topics (1 row) ran on an offline stand-in; "
        f"{WIKI_PART} (3 rows) ran on part of the dataset (validation and test splits only); "
        "synthetic:zipf1.1 (2 rows) ran on a synthetic stream; "
        "word8192 (3 rows), word8192 (GPT-2 BPE unavailable) (1 row) are word tokenizers, not the study's GPT-2 BPE.",
    ]
    images = pd.DataFrame({"data_source": ["mnist"] * 2 + [MNIST_PART] * 5 + ["fashion-mnist (substitute for MNIST)"] * 3})
    assert data_summary(images) == [
        f"Data: {MNIST_PART} (5 rows), fashion-mnist (substitute for MNIST) (3 rows), mnist (2 rows)",
        "Not the study's dataset: fashion-mnist (substitute for MNIST) (3 rows) ran on a disclosed substitute; "
        f"{MNIST_PART} (5 rows) ran on part of the dataset (test set only).",
    ]


@pytest.mark.parametrize("rows", [
    {"data_source": ["mnist"] * 3},
    {"data_source": ["wikitext-2-raw-v1"] * 2 + ["wikitext-2-v1 tokenised"], "tokenizer_name": ["gpt2"] * 3},
    {"data_source": ["synthetic:teacher"] * 4},          # the credit-bridge ladder's task, by design
    {"data_source": ["tinyshakespeare", "spirals"]},
    {"data_source": ["wikitext-2-raw-v1"], "tokenizer_name": ["none"]},   # "none" alone is not flagged
])
def test_the_study_s_own_data_is_not_flagged(rows):
    lines = data_summary(pd.DataFrame(rows))
    assert len(lines) == 1 and lines[0].startswith("Data: ")
    assert not any("Not the study's dataset" in line for line in lines)


@pytest.mark.parametrize("name,tokenizer", [("ramlm", True), ("creditbridge", False), ("geometry", False),
                                            ("quantcorr.transformer", False), ("quantcorr.autoencoder", False)])
def test_the_columns_read_are_the_ones_workloads_declare(name, tokenizer):
    from orchestrator.study import params
    from orchestrator.run import registry

    _, metrics, _ = params.declared(registry.load(name))
    assert "data_source" in metrics.model_fields
    assert ("tokenizer_name" in metrics.model_fields) == tokenizer
