"""``python -m harness``: one module per verb, each with ``add_parser(subparsers)`` and ``run(args)``,
put together by :mod:`harness.cli.main`; :mod:`harness.cli.common` builds the flags verbs share.

This package's ``__init__`` imports nothing, so the pytest plugin can read :mod:`harness.cli.common`
without loading every verb (pandas and matplotlib come with ``report``).
"""
