"""A quine's replication pass as a pure function of theta, and its Jacobian-vector products.

Regeneration maps theta to f_theta(C), the network's predictions of all N coordinates C. The
fixed-point solver (`trainers.fixed_point`) solves f_theta(C) = theta with these functions, and
the stability analysis (`models.stability`) takes the spectrum of their Jacobian
J = d f_theta(C) / d theta. Both run the architecture's one forward pass
(`models.architecture`) on the TensorFlow backend, optionally with every kinked activation
smoothed (the registry's `smooth` form), and never form the N x N Jacobian.
"""

import tensorflow as tf

from models import backends


class SmoothedBackend(backends.TensorFlowBackend):
  """The TensorFlow backend with every kinked activation smoothed over beta (None: the real one)."""

  def __init__(self, beta=None):
    super().__init__()
    self.beta = beta

  def activate(self, activation, x, params):
    if self.beta is not None and activation.kinked:
      return activation.smooth(x, self.beta, params)
    return activation.tensorflow(x, params)


def kernel_split(arch):
  """theta [N] -> {name: kernel} in the architecture's canonical order (traceable)."""
  names = arch.weight_names
  shapes = [shape for _, shape in arch.weights]
  sizes = [a * b for a, b in shapes]

  def kernels(theta):
    return {name: tf.reshape(p, s) for name, p, s in zip(names, tf.split(theta, sizes), shapes)}

  return kernels


def _setup(model, dtype):
  """(architecture, projection rows of all N coordinates, theta -> {name: kernel}).

  An auxiliary quine's replication pass is the one every metric uses: each coordinate paired with
  a zero image; its class head is part of theta and predicted, but predicts nothing itself.
  """
  arch = model.architecture
  rows = tf.cast(model.coordinate_projection.rows(tf.range(arch.num_weights)), dtype)
  return arch, rows, kernel_split(arch)


def make_forward(model, dtype=tf.float64):
  """The quine's full replication pass as a pure function (theta [N], beta) -> f_theta(C) [N].

  Args:
    model: a built quine (an auxiliary one with a zero image).
    dtype: computation dtype; the projection table is cast to it once.

  Returns:
    A Python function `forward(theta, beta=None)`, traceable by tf.function and differentiable in
    both modes: the architecture's forward pass (`models.architecture`). With beta None it equals
    `model.predict_weights(tf.range(N))` when theta is the model's `flatten()`; with a scalar
    tensor beta > 0 every kinked activation is its registry entry's `smooth(., beta)`.
  """
  arch, rows, kernels = _setup(model, dtype)

  def forward(theta, beta=None):
    return arch.predict_weights(SmoothedBackend(beta), kernels(theta), rows)

  return forward


def make_linearization(model, dtype=tf.float64):
  """Jacobian-vector products of the replication pass that share one forward pass.

  Autodiff's J v and J^T w each redo the forward pass; a CG or GMRES solve needs dozens of both at
  the same theta, so the layer inputs and activation slopes are computed once (`linearize`) and
  the products reuse them: 3 N d^2 multiply-adds each for two hidden layers.

  Args:
    model: a built quine (an auxiliary one with a zero image).
    dtype: computation dtype.

  Returns:
    (linearize, jvp, vjp), tf.functions: `linearize(theta, beta, smooth)` -> (y, inputs, slopes)
    where y = f_theta(C), inputs[l] is the input of layer l of the architecture's weight path and
    slopes[l] the activation's derivative at its pre-activation (smooth: Python bool, whether the
    kinked activations are smoothed over beta); `jvp(theta, inputs, slopes, v)` = J v;
    `vjp(theta, inputs, slopes, w)` = J^T w.
  """
  arch, rows, kernels = _setup(model, dtype)
  if arch.classifies:  # the first layer's input: [coordinate rows | a zero image part]
    rows = tf.pad(rows, [[0, 0], [0, arch.image_units]])
  # The weights off the weight path (an auxiliary quine's class head) predict nothing: their
  # columns of J are zero, and J^T w is zero there.
  off_path = sum(a * b for name, (a, b) in arch.weights
                 if name not in {n for n, _ in arch.weight_path})
  # Which layers of the weight path multiply by S(W) (kernel_norm 'standardise') rather than W.
  standardised = [arch.standardised and name in arch.hidden for name, _ in arch.weight_path]
  backend = backends.tensorflow()

  def effective(w, is_standardised):
    return backend.standardise(w, arch.config.gain) if is_standardised else w

  def standardise_linear(w, x):
    """dS(W)[X] = (gain / (rms(W) sqrt(fan_in))) (X - W <W, X> / <W, W>): S's derivative at W
    applied to X. The map is symmetric, so it is also S's transpose, for J^T w."""
    scale = arch.config.gain / tf.sqrt(tf.cast(tf.shape(w)[0], w.dtype))
    rms = tf.sqrt(tf.reduce_mean(tf.square(w)))
    return scale / rms * (x - w * tf.reduce_sum(w * x) / tf.reduce_sum(w * w))

  def value_and_slope(fn, z):
    with tf.GradientTape() as tape:
      tape.watch(z)
      a = fn(z)
    return a, tape.gradient(a, z)  # elementwise: the gradient of the sum is the derivative

  def path(theta):
    ws = kernels(theta)
    return [ws[name] for name, _ in arch.weight_path]

  @tf.function
  def linearize(theta, beta, smooth):
    backend = SmoothedBackend(beta if smooth else None)
    inputs, slopes = [], []
    h = rows
    for w, (_, act), std in zip(path(theta), arch.weight_path, standardised):
      inputs.append(h)
      h, slope = value_and_slope(lambda z, act=act: backend.activate(act, z, arch.params),
                                 tf.matmul(h, effective(w, std)))
      slopes.append(slope)
    return h[:, 0], inputs, slopes

  @tf.function
  def jvp(theta, inputs, slopes, v):
    dh = None  # the projection rows do not depend on theta
    for w, vw, h, slope, std in zip(path(theta), path(v), inputs, slopes, standardised):
      dw = standardise_linear(w, vw) if std else vw
      w = effective(w, std)
      dz = tf.matmul(h, dw) if dh is None else tf.matmul(dh, w) + tf.matmul(h, dw)
      dh = slope * dz
    return dh[:, 0]

  @tf.function
  def vjp(theta, inputs, slopes, w_out):
    ws = path(theta)
    grads = [None] * len(ws)
    dh = w_out[:, None]
    for i in reversed(range(len(ws))):
      dz = dh * slopes[i]
      grads[i] = tf.matmul(inputs[i], dz, transpose_a=True)
      if standardised[i]:
        grads[i] = standardise_linear(ws[i], grads[i])
      if i > 0:
        dh = tf.matmul(dz, effective(ws[i], standardised[i]), transpose_b=True)
    return tf.concat([tf.reshape(g, [-1]) for g in grads] + [tf.zeros([off_path], w_out.dtype)],
                     axis=0)

  return linearize, jvp, vjp
