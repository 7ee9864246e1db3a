"""The ``stepline`` command line: list and inspect tracked tasks.

Entry point: ``stepline.cli.main:main`` (also ``python -m stepline.cli.main``). The CLI talks to
the store only through the ``Backend`` protocol, so it works unchanged on any backend.
"""
