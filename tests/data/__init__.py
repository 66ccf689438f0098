"""Fake-data generators for the zoo formats and tests of nfn_lab.data."""
