"""OpenAI's Responses API: wire types and the translation to and from chat completions."""
