"""The PyTorch-eager baseline: the same quines and loops, written as most PyTorch users would.

Nothing here is tuned: `nn.Linear` layers without biases (whose default initialisation is the
paper's uniform(+-1/sqrt(fan_in))), the fixed projection as a buffer indexed per minibatch,
`torch.optim.Adamax(lr=0.002)` and a plain Python loop of `zero_grad / backward / step` over
shuffled minibatches of 10 against targets frozen at the start of the epoch; the auxiliary quine's
minibatches index the image and label tensors directly (no DataLoader, whose per-item collation
would only slow the baseline down). The full replication pass is a few large batched forward
passes under `no_grad`. It imports no TensorFlow, so its peak memory is its own.

The projections come from `models.generator.projection_rows` (the TensorFlow-free generator),
materialised as a table when it has at most `generator.MAX_TABLE_ENTRIES` entries as the Keras
quine does, and hashed on the fly otherwise with `export.frameworks.torch_projection`.

Canonical weight order as in `models.quine`: hidden kernels ([in, out], that is `weight.T`), the
weight head, then (auxiliary) the class head.
"""

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from export import frameworks
from models import generator
from models.config import PAPER_IMAGE_PROJECTION_STD, PAPER_PROJECTION_STD


class _Projection(nn.Module):
  """Rows of the fixed [num_rows, d] projection: a table buffer, or hashed on the fly."""

  def __init__(self, seed, num_rows, num_columns, std):
    super().__init__()
    self.seed, self.num_columns, self.std = seed, num_columns, std
    self.table = None
    if num_rows * num_columns <= generator.MAX_TABLE_ENTRIES:
      self.table = torch.from_numpy(
          generator.projection_rows(seed, np.arange(num_rows), num_columns, std))

  def forward(self, rows):
    if self.table is not None:
      return self.table[rows]
    return frameworks.torch_projection(self.seed, rows, self.num_columns, self.std)


class VanillaQuine(nn.Module):
  """coordinate -> projection -> num_hidden x (Linear, SELU) -> Linear(1)."""

  def __init__(self, width=100, num_hidden=2, projection_seed=0,
               projection_std=PAPER_PROJECTION_STD):
    super().__init__()
    self._build_trunk(width, num_hidden)
    self.coordinate_projection = _Projection(projection_seed, self.num_weights, width,
                                             projection_std)

  def _build_trunk(self, width, num_hidden, num_classes=0):
    self.width = width
    self.hidden = nn.ModuleList(nn.Linear(width, width, bias=False) for _ in range(num_hidden))
    self.weight_head = nn.Linear(width, 1, bias=False)
    if num_classes:
      self.class_head = nn.Linear(width, num_classes, bias=False)
    self.num_weights = sum(p.numel() for p in self.quine_parameters())

  def quine_parameters(self):
    return [layer.weight for layer in self.hidden] + [self.weight_head.weight]

  def flatten(self):
    """theta [N] in canonical order (a Keras kernel [in, out] is `weight.T`)."""
    return torch.cat([p.t().reshape(-1) for p in self.quine_parameters()])

  def trunk(self, h):
    for layer in self.hidden:
      h = F.selu(layer(h))
    return h

  def forward(self, coordinates):
    return self.weight_head(self.trunk(self.coordinate_projection(coordinates)))[:, 0]

  def predict_weights(self, coordinates):
    return self(coordinates)


class AuxiliaryQuine(VanillaQuine):
  """[coordinate projection | image projection] -> trunk -> (weight head, class head / T)."""

  def __init__(self, width=100, num_hidden=2, coordinate_units=50, image_size=784, num_classes=10,
               temperature=0.01, projection_seed=0, projection_std=PAPER_PROJECTION_STD,
               image_projection_std=PAPER_IMAGE_PROJECTION_STD):
    nn.Module.__init__(self)  # pylint: disable=non-parent-init-called
    self.temperature = temperature
    self._build_trunk(width, num_hidden, num_classes)
    self.coordinate_projection = _Projection(projection_seed, self.num_weights, coordinate_units,
                                             projection_std)
    self.image_matrix = torch.from_numpy(generator.projection_rows(
        projection_seed + 1, np.arange(image_size), width - coordinate_units,
        image_projection_std))

  def quine_parameters(self):
    return super().quine_parameters() + [self.class_head.weight]

  def forward(self, coordinates, images):
    h = self.trunk(torch.cat([self.coordinate_projection(coordinates),
                              images @ self.image_matrix], dim=1))
    return self.weight_head(h)[:, 0], self.class_head(h) / self.temperature

  def predict_weights(self, coordinates):
    rows = self.coordinate_projection(coordinates)
    h = self.trunk(torch.cat([rows, rows.new_zeros(len(rows), self.image_matrix.shape[1])], 1))
    return self.weight_head(h)[:, 0]


def train_epoch(model, optimizer, batch_size=10):
  """One epoch of a vanilla quine: every coordinate once, against targets frozen now.

  Returns:
    The mean minibatch loss.
  """
  targets = model.flatten().detach().clone()
  perm = torch.randperm(model.num_weights)
  total, steps = 0.0, 0
  for start in range(0, model.num_weights, batch_size):
    coordinates = perm[start:start + batch_size]
    loss = F.mse_loss(model(coordinates), targets[coordinates])
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    total += loss.item()
    steps += 1
  return total / steps


def train_aux_epoch(model, optimizer, train_images, train_labels, batch_size=10,
                    task_weight=0.01):
  """One epoch of an auxiliary quine: each coordinate paired with a random training image.

  Args:
    model: an AuxiliaryQuine.
    optimizer: its optimizer.
    train_images: float32 tensor [M, image_size].
    train_labels: int64 tensor [M].
    batch_size: coordinates per minibatch.
    task_weight: lambda of loss = L_SR + lambda * cross-entropy.

  Returns:
    The mean minibatch loss.
  """
  targets = model.flatten().detach().clone()
  perm = torch.randperm(model.num_weights)
  picks = torch.randint(0, len(train_labels), (model.num_weights,))
  total, steps = 0.0, 0
  for start in range(0, model.num_weights, batch_size):
    coordinates = perm[start:start + batch_size]
    index = picks[start:start + batch_size]
    predictions, logits = model(coordinates, train_images[index])
    loss = (F.mse_loss(predictions, targets[coordinates])
            + task_weight * F.cross_entropy(logits, train_labels[index]))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    total += loss.item()
    steps += 1
  return total / steps


@torch.no_grad()
def replication(model, chunk=1 << 16):
  """The full self-replication pass: all N predictions, L_SR and rho (sums in float64).

  Returns:
    (predictions [N], {'l_sr': float, 'rho': float}).
  """
  n = model.num_weights
  predictions = torch.cat([model.predict_weights(torch.arange(s, min(s + chunk, n)))
                           for s in range(0, n, chunk)])
  theta = model.flatten().double()
  l_sr = torch.sum((predictions.double() - theta)**2)
  return predictions, {'l_sr': l_sr.item(), 'rho': (l_sr / torch.sum(theta**2)).item()}
