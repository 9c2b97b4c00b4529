"""Text classifiers trained and evaluated on dataset versions from the lake."""
