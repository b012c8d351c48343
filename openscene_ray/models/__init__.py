"""The 3D side of distillation (paper Sec. 3.2): network, voxelisation, augmentation, loss, export."""

from openscene_ray.models.augment import (
    AugmentConfig,
    augment_points,
    elastic_distortion,
    random_rotation,
)
from openscene_ray.models.checkpoint import (
    CheckpointError,
    CheckpointMetadata,
    load_checkpoint,
    save_checkpoint,
)
from openscene_ray.models.loss import cosine_distill_loss
from openscene_ray.models.minkunet import (
    MinkUNet,
    MinkUNetConfig,
    build_model,
    prepare_indices,
)
from openscene_ray.models.voxelize import batch_voxels, voxelize

__all__ = [
    "AugmentConfig",
    "CheckpointError",
    "CheckpointMetadata",
    "MinkUNet",
    "MinkUNetConfig",
    "augment_points",
    "batch_voxels",
    "build_model",
    "cosine_distill_loss",
    "elastic_distortion",
    "load_checkpoint",
    "prepare_indices",
    "random_rotation",
    "save_checkpoint",
    "voxelize",
]
