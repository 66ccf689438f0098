"""Generator of DWSNets INR zoos in the exact public format."""
