"""Wire types and translators, one API family a folder.

Nothing here imports Falcon, serving or the backends.
"""
