"""A population of auxiliary quines that reproduce themselves, under selection and without it.

An individual is an auxiliary quine's theta [N]. A population is P of them held as one tensor
[P, N], and a generation is one compiled program over the whole population: the architecture's
forward pass (`models.architecture`) runs on a backend whose kernels carry a leading population
axis, so regeneration and fitness are batched matmuls, not a loop over individuals; each program
is a tf.function graph (XLA with jit_compile).

Reproduction is regeneration. A parent's offspring is its own prediction of its weights,
f_theta(C), plus a mutation (Gaussian noise of relative size `mutation`: ||delta|| = mutation *
||f_theta(C)||); the offspring then develops (regenerates itself `development` times) into an
adult. Adults are what is scored, what reproduces and what is exported; an adult whose rho exceeds
QUINE_RHO is not a quine and leaves no offspring. Fitness is MNIST accuracy on a validation split
cut from the training images (never the test split).

Two arms run from the same initial population and the same random numbers: `selection` draws each
parent by a tournament of `tournament` quines (the fittest wins), `control` takes the first
entrant of the same tournament (a uniformly random quine). Per generation and arm the engine
records the fitness (mean, best, spread), the share of quines, diversity (mean pairwise relative
distance, and the number of distinct adults at relative distance above `distinct`), and the
parent of every individual (the phylogeny); heritability is the slope of offspring fitness on
parent fitness (`heritability`).
"""

import dataclasses
import math

import numpy as np
import tensorflow as tf

from models import backends
from models.quine import build_quine
from models.stability import QUINE_RHO

ARMS = ('selection', 'control')
# The most generations (or regenerations of development) a run may ask for: a larger count is a
# typo, refused before any work (as the trainers' MAX_PHASES).
MAX_GENERATIONS = 1_000_000


@dataclasses.dataclass(frozen=True)
class EvolveConfig:
  """An evolution experiment (the population's architecture is `model`, an auxiliary quine's).

  Attributes:
    population: P, individuals per arm.
    generations: generations to run.
    mutation: relative size of an offspring's mutation, ||delta|| / ||f_theta(C)||.
    development: regenerations of an offspring before it is an adult (0 = the mutated child).
    tournament: entrants per tournament of the selection arm (>= 2).
    num_validation: validation images each adult is scored on (the last ones of MNIST's training
      split, never the test split).
    initial_development: regenerations of each random initialisation before generation 0.
    coordinate_chunk: coordinates per chunk of the batched replication pass (memory:
      P x chunk x width floats).
    distinct: relative distance above which two adults count as distinct.
    seed: seed of the initialisations, mutations and tournaments (shared by the arms).
    jit_compile: XLA-compile the generation's programs (else they run as TensorFlow graphs).
  """
  population: int = 16
  generations: int = 10
  mutation: float = 0.05
  development: int = 2
  tournament: int = 4
  num_validation: int = 2000
  initial_development: int = 100
  coordinate_chunk: int = 4096
  distinct: float = 1e-2
  seed: int = 0
  jit_compile: bool = False

  def validate(self):
    for name in ('population', 'num_validation', 'coordinate_chunk'):
      if getattr(self, name) <= 0:
        raise ValueError(f'--{name}={getattr(self, name)} must be positive')
    for name in ('generations', 'development', 'initial_development'):
      if not 0 <= getattr(self, name) <= MAX_GENERATIONS:
        raise ValueError(f'--{name}={getattr(self, name)} must be in [0, {MAX_GENERATIONS:,}]')
    if not 2 <= self.tournament <= self.population:
      raise ValueError(f'--tournament={self.tournament} must be in [2, --population='
                       f'{self.population}]')
    if not 0 <= self.seed < 2**31:
      raise ValueError(f'--seed={self.seed} must be in [0, 2**31)')
    if not (math.isfinite(self.mutation) and self.mutation >= 0):
      raise ValueError(f'--mutation={self.mutation} must be a finite number >= 0')
    return self


class PopulationBackend(backends.TensorFlowBackend):
  """The TensorFlow backend with a leading population axis on every kernel [P, in, out].

  Activations [B, in] shared by the population (the projection rows) meet a kernel as an einsum;
  from then on they are [P, B, units].
  """

  def matmul(self, a, b):
    if len(a.shape) == 2:
      a = a[None]  # [1, B, in], broadcast over the population
    return tf.matmul(a, b)

  def pad(self, x, left=0, right=0):
    return tf.pad(x, [[0, 0]] * (len(x.shape) - 1) + [[left, right]])

  def first_column(self, x):
    return x[..., 0]

  def standardise(self, kernel, gain):
    scale = tf.constant(backends.standardise_scale(kernel, gain), kernel.dtype)
    return kernel * scale / tf.sqrt(tf.reduce_mean(tf.square(kernel), axis=[-2, -1],
                                                   keepdims=True))


class Population:
  """The batched replication pass and fitness of P quines of one architecture."""

  def __init__(self, model, validation_images, validation_labels, chunk):
    self.arch = arch = model.architecture
    if not arch.classifies:
      raise ValueError('evolution scores MNIST accuracy: the population must be auxiliary quines')
    self.num_weights = arch.num_weights
    self._backend = PopulationBackend()
    rows = model.coordinate_projection.rows(tf.range(arch.num_weights))
    self._chunks = [rows[i:i + chunk] for i in range(0, arch.num_weights, chunk)]
    self._image_part = tf.matmul(tf.constant(validation_images, tf.float32),
                                 tf.constant(model.image_projection.matrix()))
    self._labels = tf.constant(validation_labels, tf.int64)
    self._shapes = [shape for _, shape in arch.weights]

  def kernels(self, thetas):
    """[P, N] -> {name: [P, in, out]}."""
    sizes = [a * b for a, b in self._shapes]
    parts = tf.split(thetas, sizes, axis=1)
    return {name: tf.reshape(p, [-1, *shape])
            for (name, shape), p in zip(self.arch.weights, parts)}

  def regenerate(self, thetas):
    """[P, N] -> f_theta(C) [P, N]: every individual's prediction of all its weights."""
    kernels = self.kernels(thetas)
    return tf.concat([self.arch.predict_weights(self._backend, kernels, rows)
                      for rows in self._chunks], axis=1)

  def fitness(self, thetas):
    """[P, N] -> validation accuracy [P]."""
    logits = self.arch.classify(self._backend, self.kernels(thetas), self._image_part)
    hits = tf.equal(tf.argmax(logits, axis=-1), self._labels[None, :])
    return tf.reduce_mean(tf.cast(hits, tf.float32), axis=1)


def rho(thetas, predictions):
  """rho of each individual [P] (predictions = f_theta(C) [P, N])."""
  return (tf.reduce_sum(tf.square(predictions - thetas), axis=1)
          / tf.reduce_sum(tf.square(thetas), axis=1))


def mutate(children, size, seed):
  """children [P, N] plus Gaussian noise of relative size `size` per child (stateless in seed)."""
  noise = tf.random.stateless_normal(tf.shape(children), seed=seed)
  scale = size * tf.norm(children, axis=1, keepdims=True) / tf.norm(noise, axis=1, keepdims=True)
  return children + scale * noise


def tournaments(fitness, quine, size, seed):
  """(selection parents [P], control parents [P]) from one draw of P tournaments of `size`.

  Entrants are drawn uniformly among the quines (all individuals if none is a quine, so that the
  arm's record shows it: nothing then reproduces faithfully). The selection arm takes each
  tournament's fittest entrant, the control arm its first.
  """
  count = tf.shape(fitness)[0]
  eligible = tf.where(quine)[:, 0]
  eligible = tf.cond(tf.size(eligible) > 0, lambda: eligible,
                     lambda: tf.range(tf.cast(count, tf.int64)))
  picks = tf.random.stateless_uniform([count, size], seed=seed, maxval=tf.size(eligible),
                                      dtype=tf.int32)
  entrants = tf.gather(eligible, picks)  # [P, size]
  best = tf.argmax(tf.gather(fitness, entrants), axis=1, output_type=tf.int32)
  selected = tf.gather(entrants, best, batch_dims=1)
  return selected, entrants[:, 0]


def heritability(parent_fitness, child_fitness):
  """Least-squares slope of child on parent fitness, with its 95% interval (normal approx).

  Returns:
    dict: slope, low, high, n (None for the slope and interval when the parents do not vary).
  """
  x = np.asarray(parent_fitness, np.float64)
  y = np.asarray(child_fitness, np.float64)
  n = len(x)
  sxx = float(np.sum((x - x.mean()) ** 2)) if n else 0.0
  if n < 3 or sxx == 0.0:
    return {'slope': None, 'low': None, 'high': None, 'n': n}
  slope = float(np.sum((x - x.mean()) * (y - y.mean())) / sxx)
  residual = y - y.mean() - slope * (x - x.mean())
  error = math.sqrt(float(np.sum(residual ** 2)) / (n - 2) / sxx)
  return {'slope': slope, 'low': slope - 1.96 * error, 'high': slope + 1.96 * error, 'n': n}


def diversity(thetas, distinct):
  """(mean pairwise relative distance, number of distinct individuals) of a population [P, N].

  Relative distance ||a - b|| / mean(||a||, ||b||); an individual is distinct when it is farther
  than `distinct` from every earlier distinct one (a greedy count of the attractors occupied).
  """
  thetas = np.asarray(thetas, np.float64)
  norms = np.linalg.norm(thetas, axis=1)
  squared = np.sum(thetas ** 2, axis=1)
  gram = thetas @ thetas.T
  distance = np.sqrt(np.maximum(squared[:, None] + squared[None, :] - 2 * gram, 0.0))
  relative = distance / np.maximum((norms[:, None] + norms[None, :]) / 2, 1e-30)
  count = len(thetas)
  mean = float(relative[np.triu_indices(count, 1)].mean()) if count > 1 else 0.0
  representatives = []
  for i in range(count):
    if all(relative[i, j] > distinct for j in representatives):
      representatives.append(i)
  return mean, len(representatives)


class Engine:
  """One generation of both arms as compiled programs over the population."""

  def __init__(self, model, config, validation_images, validation_labels, strategy=None):
    """`strategy`: a tf.distribute strategy over which the population is sharded (each replica
    develops and assesses P / replicas individuals); None runs it on the default device."""
    self.config = config.validate()
    self.strategy = strategy or tf.distribute.get_strategy()
    self.replicas = self.strategy.num_replicas_in_sync
    if config.population % self.replicas:
      raise ValueError(f'--population={config.population} must be a multiple of the '
                       f'{self.replicas} replicas it is sharded over')
    self.population = Population(model, validation_images, validation_labels,
                                 config.coordinate_chunk)
    # Graphs, not XLA: on this 2-core CPU a generation of 256 quines of N = 21,726 took 5.1 s as
    # a plain graph (oneDNN's batched matmuls) and 6.3 s XLA-compiled
    # (benchmarks/evolve_generation.py).
    jit = config.jit_compile
    self._develop = tf.function(self._develop_fn, jit_compile=jit)
    self._assess = tf.function(self._assess_fn, jit_compile=jit)
    self._offspring = tf.function(self._offspring_fn, jit_compile=jit)

  def _develop_fn(self, thetas, times):
    for _ in tf.range(times):
      thetas = self.population.regenerate(thetas)
    return thetas

  def _assess_fn(self, thetas):
    predictions = self.population.regenerate(thetas)
    return predictions, rho(thetas, predictions), self.population.fitness(thetas)

  def _offspring_fn(self, predictions, parents, seed):
    return mutate(tf.gather(predictions, parents), self.config.mutation, seed)

  def _sharded(self, fn, thetas, *args):
    """fn(shard, *args) on each replica's share of thetas [P, N], the results put together."""
    thetas = tf.constant(thetas, tf.float32)
    if self.replicas == 1:
      return fn(thetas, *args)
    shards = tf.split(thetas, self.replicas)
    values = self.strategy.experimental_distribute_values_from_function(
        lambda context: shards[context.replica_id_in_sync_group])
    out = self.strategy.run(fn, args=(values, *args))
    return tf.nest.map_structure(
        lambda x: tf.concat(self.strategy.experimental_local_results(x), axis=0), out)

  def develop(self, thetas, times):
    return self._sharded(self._develop, thetas, tf.constant(times, tf.int32))

  def assess(self, thetas):
    """(predictions [P, N], rho [P], fitness [P]) of adults [P, N]."""
    return self._sharded(self._assess, thetas)

  def initial(self, model_config):
    """Generation 0: P random initialisations of the architecture, each developed."""
    thetas = []
    for k in range(self.config.population):
      seed = (self.config.seed * self.config.population + k) % 2_000_000
      thetas.append(
          build_quine(dataclasses.replace(model_config, init_seed=seed)).flatten().numpy())
    return self.develop(np.stack(thetas), self.config.initial_development).numpy()

  def step(self, state, generation):
    """Generation `generation` + 1 of both arms from `state` {arm: (adults, predictions, rho,
    fitness)}; returns the new state and each arm's parents [P]."""
    seed = tf.constant([self.config.seed, generation], tf.int64)
    new_state, parents = {}, {}
    for arm in ARMS:
      adults, predictions, rhos, fitness = state[arm]
      quine = rhos <= QUINE_RHO
      selected, control = tournaments(tf.constant(fitness), tf.constant(quine),
                                      self.config.tournament, seed)
      chosen = selected if arm == 'selection' else control
      children = self._offspring(tf.constant(predictions), chosen, seed + [0, 1 << 20])
      children = self.develop(children, self.config.development)
      new_predictions, new_rho, new_fitness = self.assess(children)
      new_state[arm] = (children.numpy(), new_predictions.numpy(), new_rho.numpy(),
                        new_fitness.numpy())
      parents[arm] = chosen.numpy()
    return new_state, parents


def arm_record(arm, generation, state, parents, previous_fitness, distinct):
  """The metrics line of one arm at one generation."""
  adults, _, rhos, fitness = state
  mean_distance, attractors = diversity(adults, distinct)
  record = {
      'generation': generation, 'arm': arm,
      'fitness_mean': float(np.mean(fitness)), 'fitness_best': float(np.max(fitness)),
      'fitness_std': float(np.std(fitness)),
      'quine_share': float(np.mean(rhos <= QUINE_RHO)),
      'rho_median': float(np.median(rhos)), 'rho_max': float(np.max(rhos)),
      'diversity': mean_distance, 'attractors': attractors,
  }
  if parents is not None:
    record['heritability'] = heritability(previous_fitness[parents], fitness)
  return record
