"""Dataset loaders with a cache/data root and offline stand-ins.

- ``shakespeare``: tinyshakespeare ``input.txt`` (data root, cache dir or download) or the original
  stand-in corpus in ``corpus/``; char-level chunking for the quantcorr transformer.
- ``mnist``: MNIST from IDX files (data root) or torchvision download, or sklearn's digits.
- ``wikitext``: WikiText-2 token streams for RAM-LM.
- ``cifar10``: CIFAR-10 for the credit-bridge workload.

Set ``OVERNIGHT_OFFLINE=1`` to skip download attempts (the quantcorr loaders also remember a failed
download for an hour per cache dir).
"""
