"""Generator of NFN SIREN zoos in the exact public format."""
