"""Builds the tf.distribute strategy a training binary asked for.

The binaries build the strategy once, before any model, and pass it into the libraries, which
create their state under `strategy.scope()` and run their steps through `strategy.run`.
"""

import tensorflow as tf

STRATEGIES = ('default', 'one_device', 'mirrored', 'multi_worker', 'tpu')


def split_cpu(num_devices):
  """Splits the first CPU into `num_devices` logical devices (to exercise mirroring on a CPU).

  Must run before TensorFlow initialises its devices, i.e. before any op runs.
  """
  cpu = tf.config.list_physical_devices('CPU')[0]
  tf.config.set_logical_device_configuration(
      cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(num_devices)])


def make_strategy(name, tpu=None, device=None, cpu_devices=0):
  """The strategy called `name`.

  Args:
    name: one of STRATEGIES. 'default' is TF's no-op strategy; 'one_device' places everything on
      `device` (default: the first GPU, else the CPU); 'mirrored' mirrors over all local GPUs (or
      over the logical CPU devices of `cpu_devices`); 'multi_worker' is
      MultiWorkerMirroredStrategy configured from the TF_CONFIG environment variable; 'tpu'
      connects to `tpu` with a TPUClusterResolver and builds a TPUStrategy.
    tpu: the TPU's name or grpc:// address ('tpu' only; '' or None means the local TPU).
    device: the device of 'one_device'.
    cpu_devices: if > 1, split the CPU into this many logical devices first.

  Returns:
    A tf.distribute.Strategy.

  Raises:
    ValueError: an unknown name, or --tpu without --strategy=tpu.
  """
  if name not in STRATEGIES:
    raise ValueError(f'--strategy={name!r} is not one of {STRATEGIES}')
  if tpu and name != 'tpu':
    raise ValueError(f'--tpu={tpu} needs --strategy=tpu, not {name}')
  if cpu_devices > 1:
    split_cpu(cpu_devices)
  if name == 'default':
    return tf.distribute.get_strategy()
  if name == 'one_device':
    if device is None:
      device = '/gpu:0' if tf.config.list_physical_devices('GPU') else '/cpu:0'
    return tf.distribute.OneDeviceStrategy(device)
  if name == 'mirrored':
    devices = None
    if not tf.config.list_physical_devices('GPU') and cpu_devices > 1:
      devices = [d.name for d in tf.config.list_logical_devices('CPU')]
    return tf.distribute.MirroredStrategy(devices)
  if name == 'multi_worker':
    return tf.distribute.MultiWorkerMirroredStrategy()
  resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or '')
  tf.config.experimental_connect_to_cluster(resolver)
  tf.tpu.experimental.initialize_tpu_system(resolver)
  return tf.distribute.TPUStrategy(resolver)
