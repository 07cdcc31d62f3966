"""Labelled data the signals ship with (sentiment classifier training set)."""

__all__: list[str] = []
