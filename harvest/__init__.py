"""harvest: crawl, curate, label and train, from one command line."""

__version__ = "0.1.0"
