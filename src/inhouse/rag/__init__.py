"""Ground a model in your own documents: ingest, chunk, index, retrieve, cite."""
