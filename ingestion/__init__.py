"""The lake: Delta tables under one root, with provenance on every row."""

from ingestion.lake import Lake, LakeError

__all__ = ["Lake", "LakeError"]
