"""One worker of the multi-worker test: trains the 'small' vanilla preset under
MultiWorkerMirroredStrategy (configured by TF_CONFIG) and saves its final weights.

  python tests/multi_worker_main.py WORKDIR NUM_EPOCHS WEIGHTS_OUT.npy
"""

import dataclasses
import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow as tf

from trainers import configs
from trainers import train_lib


def main(workdir, num_epochs, weights_out):
  strategy = tf.distribute.MultiWorkerMirroredStrategy()
  config = dataclasses.replace(configs.PRESETS['small'], num_epochs=int(num_epochs), plot_every=0)
  trainer = train_lib.QuineTrainer(config, strategy)
  record = train_lib.train(trainer, workdir, train_lib.config_dict(config))
  np.save(weights_out, trainer.model.flatten().numpy())
  print('status', record['status'], 'phase', record['phase'], flush=True)


if __name__ == '__main__':
  main(*sys.argv[1:])
