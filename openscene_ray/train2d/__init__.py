"""2D training with Ray Train: an LSeg trained on posed views with label maps (the synthetic
world), exported for the ``lseg`` extractor. Config (:mod:`.config`), views and augmentation
(:mod:`.data`), loss and per-view scoring (:mod:`.objective`), the worker loop (:mod:`.loop`), the
trainer wiring and export (:mod:`.job`). Import the submodules directly; this package stays light
for the CLI."""
