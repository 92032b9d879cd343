"""A scorer module that cannot be imported (its import raises), for the CLI's user-error tests."""

raise RuntimeError("this module fails to import, on purpose")
