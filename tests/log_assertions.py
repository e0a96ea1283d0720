"""Checks on captured solver logs."""


def assert_logged(text, *lines):
    """Every one of ``lines`` occurs somewhere in the log ``text``."""
    missing = [line for line in lines if line not in text]
    assert not missing, f"not in the log: {missing}"
