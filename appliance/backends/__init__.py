"""Workers that answer in the server process.

The OpenAI-compatible upstream proxy and the scripted backend.
"""
