"""A tiny TensorFlow SavedModel with OpenSeg's serving signature, for the adapter's tests and the GPU
check (the real model is not downloadable here).

It resizes like OpenSeg (long side to 640, pad bottom/right to 640×640) and returns features that
are known functions of the pixel: its resized RGB, x and y in the 640 canvas, a validity flag,
r·g and 1-b (8 channels). Padding is filled with :data:`PAD`, so any padding that leaks shows up.

Import order: torchvision (or open_clip) must be imported before TensorFlow in any process; the
other order aborts it. This module imports TensorFlow only inside :func:`write_stand_in`.
"""

from __future__ import annotations

__all__ = ["CHANNELS", "PAD", "write_stand_in"]

CHANNELS = 8
PAD = -5.0


def _stand_in_module():
    import tensorflow as tf

    class OpenSegStandIn(tf.Module):
        @tf.function(
            input_signature=[
                tf.TensorSpec([], tf.string, name="inp_image_bytes"),
                tf.TensorSpec([None, CHANNELS], tf.float32, name="inp_text_emb"),
            ]
        )
        def serve(self, inp_image_bytes, inp_text_emb):
            image = tf.cast(tf.io.decode_jpeg(inp_image_bytes, channels=3), tf.float32) / 255.0
            hf = tf.cast(tf.shape(image)[0], tf.float32)
            wf = tf.cast(tf.shape(image)[1], tf.float32)
            scale = 640.0 / tf.maximum(hf, wf)
            sh = tf.cast(tf.round(hf * scale), tf.int32)
            sw = tf.cast(tf.round(wf * scale), tf.int32)
            rgb = tf.image.pad_to_bounding_box(tf.image.resize(image, tf.stack([sh, sw])), 0, 0, 640, 640)
            valid = tf.image.pad_to_bounding_box(tf.ones(tf.stack([sh, sw, 1])), 0, 0, 640, 640)
            coords = (tf.range(640, dtype=tf.float32) + 0.5) / 640.0
            xs = tf.tile(coords[None, :, None], [640, 1, 1])
            ys = tf.tile(coords[:, None, None], [1, 640, 1])
            feat = tf.concat([rgb, xs, ys, valid, rgb[..., :1] * rgb[..., 1:2], 1.0 - rgb[..., 2:]], axis=-1)
            feat = tf.where(valid > 0, feat, PAD) + 0.0 * tf.reduce_sum(inp_text_emb)
            sy, sx = tf.cast(sh, tf.float32) / hf, tf.cast(sw, tf.float32) / wf
            info = tf.stack([tf.stack([hf, wf]), [640.0, 640.0], tf.stack([sy, sx]), [0.0, 0.0]])
            return {"ppixel_ave_feat": feat[None], "image_info": info}

    return OpenSegStandIn()


def write_stand_in(path: str) -> str:
    """Save the stand-in SavedModel under ``path`` (a local folder); returns ``path``."""
    import tensorflow as tf

    module = _stand_in_module()
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve.get_concrete_function()})
    return path
