"""Side-by-side speed benchmarks of nfn-lab against the reference ``nfn`` package (not installed with nfn-lab)."""
