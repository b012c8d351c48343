"""openscene-ray: OpenScene on Ray."""
__version__ = "0.1.0"
