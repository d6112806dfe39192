"""The HTTP surface: Falcon resources, middleware and the error renderer."""
