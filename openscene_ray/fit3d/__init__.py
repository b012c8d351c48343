"""FiT3D (Yue et al., ECCV 2024): 3D-aware fine-tuning of 2D feature backbones (seed facts §2).

Stages (each a sub-package of the house shape: config, pure cores, thin job and command):

* :mod:`.lift` (``openscene-ray fit3d-lift``, Stage I): a backbone's features lifted into every
  scene, as feature Gaussians (FiT3D's) or as fused features on the scene's points; one scene per
  actor call of a Ray Data job;
* :mod:`.finetune` (``openscene-ray fit3d-finetune``, Stage II): the whole backbone fine-tuned with
  Ray Train against the lifted features rendered into every training view; exported as
  ``<backbone>-fit3d``;
* :mod:`.probe` (``openscene-ray fit3d-probe``): linear probes (2D mIoU) and multi-view consistency
  of the original, fine-tuned and concatenated features.

Shared pure cores: :mod:`.camera`, :mod:`.raster` (3D Gaussian rasterisation: a torch reference
and gsplat), :mod:`.gaussians`, :mod:`.splat` (z-buffered points), :mod:`.representation` (the one
rendering interface and the per-scene files), :mod:`.losses`, :mod:`.views` (views and backbone
targets), :mod:`.fitting` and :mod:`.densify` (Stage I's optimisation), :mod:`.consistency`.
"""
