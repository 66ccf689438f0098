"""Generator of zoos in nfn-lab's Arrow/Parquet format."""
