"""The gate between raw and curated: Great Expectations suites, quarantine, reports."""
