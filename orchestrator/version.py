"""overnight's version, apart from the package's __init__ so that a module inside the package can
read it without importing the package's public API (which imports the rest)."""
__version__ = "0.1.0"
