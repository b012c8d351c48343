"""3D distillation with Ray Train: samples and sparse collate (:mod:`.data`), the per-worker loop
(:mod:`.loop`), config, trainer wiring and export (:mod:`.trainer`). Import the submodules
directly; this package stays light for the CLI."""
