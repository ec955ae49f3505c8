"""Models: the ColBERT teacher and the PoolAvg bi-encoder student over a shared BERT backbone."""
