"""Configuration: the one option table, its parsers, and the validated :class:`Settings` of a session."""
