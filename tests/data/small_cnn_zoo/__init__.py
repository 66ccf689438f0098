"""Generator of Small CNN Zoo folders in the exact public format."""
