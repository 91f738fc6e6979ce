"""sentence embeddings for search: sentence-transformers model and trainer, retrieval metrics."""
