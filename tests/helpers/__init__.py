"""Helpers shared by every test package (importable as `helpers.*`: pytest puts tests/ on sys.path)."""
