"""The kernel every stage uses: storage (S3 settings and clients in s3), config, scene and manifest,
images, safe loading, labels, text, feature shards, PLY, the Ray runtime and the registry helper.
Kernel modules never import a stage package."""
