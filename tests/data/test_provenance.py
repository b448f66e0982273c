"""The report header's data lines (orchestrator/provenance.py): the data source and the tokenizer
each row recorded, counted; stand-ins and substitutes named as such; the columns it reads are the
ones the workloads declare."""
from __future__ import annotations

import pandas as pd
import pytest

from orchestrator.provenance import data_summary


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
        "Not the study's dataset: standin:pydoc_topics (1 row) ran on an offline stand-in.",
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


@pytest.mark.parametrize("name,tokenizer", [("ramlm", True), ("creditbridge", False), ("geometry", False),
                                            ("quantcorr.transformer", False), ("quantcorr.autoencoder", False)])
def test_the_columns_read_are_the_ones_workloads_declare(name, tokenizer):
    from orchestrator import params, registry

    _, metrics, _ = params.declared(registry.load(name))
    assert "data_source" in metrics.model_fields
    assert ("tokenizer_name" in metrics.model_fields) == tokenizer
