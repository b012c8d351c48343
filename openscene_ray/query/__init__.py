"""Open-vocabulary queries (paper Sec. 4.3 applications): text or image queries as per-point
heatmaps on one scene (:mod:`openscene_ray.query.scene`) and as top-k scenes, regions and points
over every scene of a fused output (:mod:`openscene_ray.query.database`); :mod:`.job` drives
both. Import the submodules directly; this package stays light for the CLI."""
