"""One module per API family or operator page.

Thin Falcon resources that parse, call serving and render.
"""
