"""API families served on top of chat completions, each beside the OpenAI chat types.

Each module here holds one family's wire types and the one translator between it and the
internal chat-completions request (a plain dict that the gateway serves on every
backend), and back from the chat reply or stream. Nothing here imports Falcon or the
workers: resources parse, call the translator, run the gateway and render.
"""
