"""Helpers shared by the tests: each written once here, imported as `support.<module>`.

conftest.py holds only the fixtures, built from these.
"""
