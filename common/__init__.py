"""What every layer shares and that knows nothing of the pipeline or the trainer (ARCHITECTURE.md)."""
