"""The local model process (`appliance worker`).

Its own small HTTP server and the engines; the only part that imports llama_cpp or
onnxruntime.
"""

# The header that names a call (see :mod:`appliance.child.calls`): here, so that the parent
# (``appliance.local``) reads it without importing the child's HTTP server.
CALL_HEADER = "x-appliance-call"
