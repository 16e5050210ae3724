"""headless-bench: compare headless models with their headed baselines under matched compute."""

__version__ = "0.1.0"
