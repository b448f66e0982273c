"""Dataset loaders with a cache/data root and offline stand-ins."""
