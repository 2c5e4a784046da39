"""Tiny quines, hand-made training workdirs and fake images for the export tests (testonly).

A workdir made here has what the trainers leave behind and export reads: config.json with the
model config, and a checkpoint of the model and its optimizer under checkpoints/. No training is
involved.
"""

import json
import os

import keras
import numpy as np
import tensorflow as tf

import formats
from models import build_quine
from models.config import ModelConfig

# N = 2 * 4 * 4 + 4 = 36 weights.
VANILLA = ModelConfig(width=4)
# N = 2 * 8 * 8 + 8 + 8 * 3 = 160 weights; 4 coordinate units + 4 image units.
AUXILIARY = ModelConfig(kind='auxiliary', width=8, coordinate_units=4, image_size=16,
                        num_classes=3, temperature=0.1)
CONFIGS = {'vanilla': VANILLA, 'auxiliary': AUXILIARY}


def make_workdir(workdir, config, scale=1.0):
  """Writes a workdir holding a freshly initialised quine (weights times `scale`).

  Args:
    workdir: the folder to create.
    config: a ModelConfig.
    scale: multiplies every initial weight (2.0 keeps a lineage from collapsing at once).

  Returns:
    The model, as checkpointed.
  """
  model = build_quine(config)
  if scale != 1.0:
    model.assign_flat(model.flatten() * scale)
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, formats.CONFIG_FILE), 'w') as f:
    json.dump({'model': config.to_dict(), 'num_weights': config.num_weights}, f)
  # Saved as the trainers save it: with an optimizer built on the weights in canonical order.
  optimizer = keras.optimizers.Adamax()
  optimizer.build(model.quine_variables)
  checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer)
  tf.train.CheckpointManager(checkpoint, os.path.join(workdir, formats.CHECKPOINT_DIR),
                             max_to_keep=3).save()
  return model


def fake_images(num_images, image_size, num_classes, seed=0):
  """Random images in [0, 1) and random labels: (float32 [M, image_size], int64 [M])."""
  rng = np.random.default_rng(seed)
  return (rng.random((num_images, image_size), dtype=np.float32),
          rng.integers(0, num_classes, num_images).astype(np.int64))
