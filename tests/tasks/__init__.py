"""Tests of nfn_lab.tasks."""
