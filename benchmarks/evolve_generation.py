r"""One generation of a population of auxiliary quines, against the same-shape batched matmul.

A generation of experiments/evolve.py is, per arm: the offspring's mutation, `development`
regenerations, and one assessment (a regeneration for rho and the next offspring, and the fitness
on the validation images). This times Engine.step (both arms) on random weights and random
validation images, and the batched matmul that dominates it, [N, width] x [P, width, width], on
its own; the ratio says how close the generation runs to the machine's matmul rate.

  python benchmarks/evolve_generation.py --population=256 --output=benchmarks/evolve_generation.json

FLOPs counted: 2 P N w^2 per regeneration's first layer (the coordinate rows padded with the
image units' zeros, as the architecture's forward pass has them), 2 P N w for the weight head,
and 2 P M w (w + classes) for the fitness on M images.
"""

import json
import os
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
import numpy as np
import tensorflow as tf

from experiments import evolve_lib
from models.quine import build_quine
from trainers import configs

_POPULATION = flags.DEFINE_integer('population', 256, 'P, individuals per arm.')
_PRESET = flags.DEFINE_string('preset', 'lineage', 'Auxiliary preset of the individuals.')
_DEVELOPMENT = flags.DEFINE_integer('development', 2, 'Regenerations per offspring.')
_NUM_VALIDATION = flags.DEFINE_integer('num_validation', 2000, 'Validation images.')
_REPEATS = flags.DEFINE_integer('repeats', 3, 'Timed generations (the median is reported).')
_OUTPUT = flags.DEFINE_string('output', None, 'Write the result as JSON here too.')
_JIT = flags.DEFINE_bool('jit_compile', False, "XLA-compile the generation's programs.")


def _median_seconds(fn, repeats):
  fn()  # compile
  times = []
  for _ in range(repeats):
    began = time.perf_counter()
    fn()
    times.append(time.perf_counter() - began)
  return float(np.median(times))


def main(argv):
  del argv
  model_config = configs.AUX_PRESETS[_PRESET.value].model
  p, n, w = _POPULATION.value, model_config.num_weights, model_config.width
  m, k = _NUM_VALIDATION.value, model_config.num_classes
  config = evolve_lib.EvolveConfig(population=p, development=_DEVELOPMENT.value,
                                   num_validation=m, jit_compile=_JIT.value)
  rng = np.random.default_rng(0)
  model = build_quine(model_config)
  engine = evolve_lib.Engine(model, config, rng.random((m, model_config.image_size), np.float32),
                             rng.integers(0, k, m))
  thetas = np.tile(model.flatten().numpy(), (p, 1))
  thetas += rng.normal(scale=0.01, size=thetas.shape).astype(np.float32)
  assessed = tuple(x.numpy() for x in engine.assess(thetas))
  state = {arm: (thetas, *assessed) for arm in evolve_lib.ARMS}
  generation = _median_seconds(lambda: engine.step(state, 0), _REPEATS.value)

  # The reference: the generation's dominant product, [chunk, w] x [P, w, w], timed alone in the
  # forms TensorFlow offers; the fastest sets the rate. Only a scalar comes back.
  rows = tf.random.normal([min(n, config.coordinate_chunk), w])
  kernels = tf.random.normal([p, w, w])
  forms = {
      'einsum_xla': tf.function(
          lambda: tf.reduce_sum(tf.einsum('bi,pio->pbo', rows, kernels)), jit_compile=True),
      'batched_matmul': tf.function(
          lambda: tf.reduce_sum(tf.matmul(rows[None], kernels))),
      'one_gemm': tf.function(lambda: tf.reduce_sum(tf.matmul(
          rows, tf.reshape(tf.transpose(kernels, [1, 0, 2]), [w, p * w])))),
  }
  product = 2 * p * int(rows.shape[0]) * w * w
  rates = {name: product / _median_seconds(lambda f=f: f().numpy(), _REPEATS.value)
           for name, f in forms.items()}
  matmul_rate = max(rates.values())

  regeneration = 2 * p * n * w * w + 2 * p * n * w
  fitness = 2 * p * m * w * (w + k)
  flops = len(evolve_lib.ARMS) * ((config.development + 1) * regeneration + fitness)
  result = {
      'population': p, 'num_weights': n, 'width': w, 'development': config.development,
      'num_validation': m, 'seconds_per_generation': generation,
      'gflop_per_generation': flops / 1e9,
      'gflops_generation': flops / generation / 1e9,
      'gflops_matmul_forms': {name: rate / 1e9 for name, rate in rates.items()},
      'gflops_batched_matmul': matmul_rate / 1e9,
      'fraction_of_matmul_rate': flops / generation / matmul_rate,
      'jit_compile': config.jit_compile,
      'threads': tf.config.threading.get_intra_op_parallelism_threads(),
  }
  print(json.dumps(result, indent=2))
  if _OUTPUT.value:
    with open(_OUTPUT.value, 'w') as f:
      f.write(json.dumps(result, indent=2) + '\n')


if __name__ == '__main__':
  app.run(main)
