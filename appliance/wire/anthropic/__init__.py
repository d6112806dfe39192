"""Anthropic's Messages API: wire types and the translation to and from chat completions."""
