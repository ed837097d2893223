"""blogflow: Beam pipelines that keep a blogging platform's sums, feeds and backups current."""

__all__ = ["__version__"]

__version__ = "0.1.0"
