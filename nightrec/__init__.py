"""nightrec: a nightly batch recommendation pipeline (pure logic; never imports Prefect)."""

__version__ = "0.1.0"
