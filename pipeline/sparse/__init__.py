"""Sparse retrieval: Anserini (Lucene) BM25 through pyserini."""
