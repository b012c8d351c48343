"""Datasets: layout readers and the ingest stage.

:mod:`.layouts` holds the layout base class and registry, :mod:`.view_files` the checks of view
files, :mod:`.points` the point conversions and :mod:`.files` the file helpers the layouts share;
one module per dataset (:mod:`.scannet`, :mod:`.matterport`, :mod:`.replica`, :mod:`.nuscenes`,
:mod:`.posed_rgbd`); the ingest stage is :mod:`.ingest` (CLI in :mod:`.command`). Import the
submodules directly; this package imports nothing so that importing it stays cheap.
"""
