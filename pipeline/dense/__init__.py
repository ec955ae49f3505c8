"""Dense retrieval: corpus and query encoding, Faiss indexes, search, ColBERT re-ranking."""
