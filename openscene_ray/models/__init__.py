"""The 3D side: networks (one registry: MinkUNet18A, Res16UNet34C), voxelisation, augmentation,
loss, export."""

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
    prepare_indices,
)
from openscene_ray.models.res16unet import Res16UNet, Res16UNetConfig
from openscene_ray.models.voxelize import batch_voxels, voxelize
from openscene_ray.models.zoo import MODELS, build_model, model_kind

__all__ = [
    "MODELS",
    "AugmentConfig",
    "CheckpointError",
    "CheckpointMetadata",
    "MinkUNet",
    "MinkUNetConfig",
    "Res16UNet",
    "Res16UNetConfig",
    "augment_points",
    "batch_voxels",
    "build_model",
    "cosine_distill_loss",
    "elastic_distortion",
    "load_checkpoint",
    "model_kind",
    "prepare_indices",
    "random_rotation",
    "save_checkpoint",
    "voxelize",
]
