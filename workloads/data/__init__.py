"""Dataset loaders with a cache/data root, disclosed substitutes and offline stand-ins.

- ``shakespeare``: tinyshakespeare ``input.txt`` (data root, cache dir or download) or the original
  stand-in corpus in ``corpus/``; char-level chunking for the quantcorr transformer.
- ``mnist``: MNIST from IDX files (data root) or torchvision download; else MNIST's test set alone,
  split 8,000 train / 2,000 test (seeded, disclosed as "mnist test set only"); else Fashion-MNIST's
  IDX files as a disclosed substitute; else sklearn's digits.
- ``wikitext``: WikiText-2 token streams for RAM-LM (raw or tokenised layout; validation + test only
  when that is all there is), GPT-2 BPE through tiktoken or a word tokenizer.
- ``cifar10``: CIFAR-10 for the credit-bridge workload; else Fashion-MNIST as a disclosed substitute.
- ``locate``: where each dataset is looked for, and ``require``, the one call of a workload's
  ``preflight`` hook: at full scale (or with ``data: real``) a missing dataset raises DataMissing
  before Ray starts instead of falling back to a stand-in.

Set ``OVERNIGHT_OFFLINE=1`` to skip download attempts (the quantcorr loaders also remember a failed
download for an hour per cache dir). ``OVERNIGHT_DATA`` (or ``--data-root``) is the data root.
"""
from orchestrator import DataMissing

from .locate import DATASETS, at_scale, fingerprint, preflight_for, require, status

__all__ = ["DATASETS", "DataMissing", "at_scale", "fingerprint", "preflight_for", "require", "status"]
