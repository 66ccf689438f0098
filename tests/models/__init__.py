"""Tests of nfn_lab.models."""
