"""SSOV (AFOV): annotation-free 3D training from a 2D open-vocabulary segmenter (seed facts §3).

Stages (each a sub-package of the house shape: config, pure cores, thin job and command):

* :mod:`.segment` (``openscene-ray segment``): superpixels per view, from any 2D extractor used as
  a segmenter over the dictionary's vocabulary, or imported from the original scripts;
* :mod:`.lift` (``openscene-ray lift``): superpixels → superpoints and pseudo-labels per point;
* :mod:`.pretrain` (``openscene-ray pretrain``): TMP, the tri-modal contrastive pre-training;
* :mod:`.train` (``openscene-ray train-free``): annotation-free training on the pseudo-labels.

Shared pure cores: :mod:`.dictionary`, :mod:`.store` (superpixels), :mod:`.lifted` (superpoints
and pseudo-labels), :mod:`.losses`, :mod:`.afi` (the training-free post-process that evaluation
runs as an option) and :mod:`.network` (running a trained SSOV network on points).
"""
