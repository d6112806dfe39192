"""OpenAI's chat completions, completions, embeddings and rerank wire types."""
