"""similarity: cosine that follows rated pairs."""
