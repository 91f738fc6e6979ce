"""named entities (token classification): words, documents, tag schemes, entity metrics, the CRF baseline."""
