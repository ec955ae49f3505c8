"""TCT-ColBERT pipeline: every stage is a module with a CLI (python -m pipeline.<stage>)."""
