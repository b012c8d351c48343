"""Datasets: the scene manifest (:mod:`.manifest`), layout readers (:mod:`.layouts`, one module
per dataset) and the ingest stage (:mod:`.ingest`, CLI in :mod:`.command`). Import the submodules
directly; this package imports nothing so that reading a manifest stays cheap."""
