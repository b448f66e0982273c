"""Python face of the Rust crate in this folder (built by maturin into ``native._core``)."""
from native._core import *  # noqa: F403
from native._core import __version__, version  # noqa: F401
