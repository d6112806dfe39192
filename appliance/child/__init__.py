"""The local model process (`appliance worker`).

Its own small HTTP server and the engines; the only part that imports llama_cpp or
onnxruntime.
"""
