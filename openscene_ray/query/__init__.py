"""Open-vocabulary queries (paper Sec. 4.3 applications): text or image queries as per-point
heatmaps on one scene (:mod:`openscene_ray.query.api`) and as top-k scenes, regions and points
over a database of feature shards (:mod:`openscene_ray.query.database`). Import the submodules
directly; this package stays light for the CLI."""
