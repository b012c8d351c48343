"""The browser viewer (``openscene-ray view``): any scene of a manifest, free-text and image
queries as heatmaps, label-set segmentation, and a search over every scene of a fused output.

Pure cores (no browser, no Ray): :mod:`.display` (what is drawn, camera, picking),
:mod:`.scoring` (query and label colours, legends, top classes), :mod:`.classes` (label-set
parsing), :mod:`.cache` (per-scene features and text embeddings), :mod:`.urlstate` (the view in
the URL), :mod:`.backend` (everything a page asks for, as plain data). The web side:
:mod:`.gate` (the token check in front of viser), :mod:`.session` (one browser tab's panel) and
:mod:`.server` (viser wiring). Import the submodules directly; this package stays light for the CLI.
"""
