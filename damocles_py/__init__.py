"""damocles-py: a Filecoin sector-sealing worker over the real filecoin-proofs library."""

__version__ = "0.1.0"
