"""gitopsd: GitOps reconciliation for WebAssembly edge functions."""

__version__ = "0.1.0"
