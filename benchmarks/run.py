r"""Benchmarks: quine-zoo's training and replication against a PyTorch-eager baseline, and at scale.

  # Everything (about 8 minutes on the 2-core machine when it is otherwise idle, 20 under load),
  # writing the JSON that benchmarks/README.md's tables come from:
  TFDS_DATA_DIR=../shared/tfds python benchmarks/run.py --output=benchmarks/results.json

  # Smoke run: tiny sizes, random MNIST-shaped data, well under a minute.
  python benchmarks/run.py --quick --output=/tmp/bench.json

  # Some groups only.
  python benchmarks/run.py --groups=matmul,paper_vanilla

Groups (each runs its implementations interleaved, one worker process per implementation; see
harness.py):
  matmul         float32 tf.matmul GFLOP/s: 2048^3 (the peak) and the full passes' layer shapes
                 [chunk, d] x [d, d]; torch.matmul beside it for reference.
  paper_vanilla  the paper's vanilla quine (N = 20,100): one Adamax epoch of minibatches of 10, and
                 the full replication pass; PyTorch eager (baseline), quine_zoo, quine_zoo_graph.
  paper_aux      the paper's auxiliary quine (N = 21,100) on MNIST: one epoch with its data
                 pipeline.
  scale_w{d}     vanilla quines of width d = 100 ... 1000 (N = 20,100 ... 2,001,000): the full pass,
                 and an epoch of minibatches of 1,000 timed over a fixed block of 20 steps and
                 extrapolated, for quine_zoo and quine_zoo_graph (quine_zoo_chunk65536 at d = 316
                 and 500); then the fitted exponents of time and memory in N.
Groups with full passes also time tf.matmul at 2048^3 and at their layers' shapes, interleaved.

Implementations: torch_eager (the baseline, benchmarks/torch_baseline.py), quine_zoo (the
library's own code path with its defaults: QuineTrainer.run_epoch / replication,
AuxTrainer.run_epoch; XLA-compiled blocks of steps and projection hash, eval_chunk_size 8192),
quine_zoo_graph (the same library with jit_compile=False and eval_chunk_size=65536: the library's
behaviour before it adopted those, so that each run shows their gain; the aux epoch keeps its
in-graph index blocks, without XLA, as tf.data is gone), quine_zoo_chunk65536 (the
defaults but eval_chunk_size=65536: the chunk size's share of that gain). `_1thread` rows run with
one intra- and inter-op thread.

Every result row has: case, impl, seconds (median wall time over the repeats), cpu_seconds,
ratio_to_baseline (torch_eager's seconds over this row's: the speed-up, > 1 is faster),
ratio_to_best_torch (the same against the faster of torch's thread settings), throughput, gflops,
fraction_of_matmul_peak (a TensorFlow full pass: against a 2048^3 tf.matmul timed just before and
after each pass in the same process, median over the repeats; other rows: against the group's
2048^3 tf.matmul), fraction_of_same_shape_peak (against the group's tf.matmul of the layer's own
shape), peak_rss_mb (the peak resident memory of the row's worker process over everything it
ran), load_average (the machine's, before and after the group: other work shares the CPUs).
"""

import json
import os
import platform
import statistics
import sys
import tempfile
import time

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO_ROOT not in sys.path:
  sys.path.insert(0, _REPO_ROOT)

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
import numpy as np

from benchmarks import cases
from benchmarks import harness

_QUICK = flags.DEFINE_bool('quick', False, 'Tiny sizes and 2 repeats: checks that it all runs.')
_OUTPUT = flags.DEFINE_string('output', None, 'Write the results here as JSON.')
_GROUPS = flags.DEFINE_list('groups', None, 'Run only these groups (default: all).')
_THREADS = flags.DEFINE_integer(
    'threads', os.cpu_count(),
    'Threads of the default rows: TensorFlow intra- and inter-op, torch.set_num_threads.')
_DATA_DIR = flags.DEFINE_string(
    'data_dir', None, 'tfds data dir holding mnist/3.0.1 (default: TFDS_DATA_DIR, else tfds\'s '
    'default); without it the aux group uses random MNIST-shaped arrays and says so.')

BASELINE = 'torch_eager'
SCALE_WIDTHS = (100, 200, 316, 500, 1000)
LIBRARY_EVAL_CHUNK = cases.LIBRARY_EVAL_CHUNK
GRAPH_EVAL_CHUNK = cases.GRAPH_EVAL_CHUNK
# The library as it was before it adopted XLA and the smaller chunks.
GRAPH = dict(jit_compile=False, eval_chunk_size=GRAPH_EVAL_CHUNK)


def _num_weights(width, num_hidden=2):
  return num_hidden * width * width + width


def _eval_chunk(width, chunk=LIBRARY_EVAL_CHUNK):
  return min(chunk, _num_weights(width))


def _layer_shapes(width):
  """The full passes' layer shapes [chunk, d] x [d, d], for both chunk sizes timed."""
  return [(_eval_chunk(width, c), width, width) for c in (LIBRARY_EVAL_CHUNK, GRAPH_EVAL_CHUNK)]


class Sizes:
  """Everything that differs between the full run and --quick."""

  def __init__(self, quick):
    self.quick = quick
    if quick:
      self.paper_width, self.aux_width, self.aux_model = 6, 8, {'coordinate_units': 4}
      self.scale_widths, self.scale_batch, self.scale_steps = (8, 16), 20, 2
      self.peak_shape = (128, 128, 128)
      self.chunk_widths = (8,)
      self.repeats = dict(epoch=2, full_pass=2, aux=2, matmul=2, scale_pass=lambda d: 2,
                          scale_steps=2)
    else:
      self.paper_width, self.aux_width, self.aux_model = 100, 100, None
      self.scale_widths, self.scale_batch, self.scale_steps = SCALE_WIDTHS, 1000, 20
      self.peak_shape = (2048, 2048, 2048)
      self.chunk_widths = (316, 500)
      self.repeats = dict(epoch=9, full_pass=15, aux=5, matmul=5,
                          scale_pass=lambda d: 7 if d <= 200 else 5 if d <= 316 else 3,
                          scale_steps=3)

    # quine_zoo_chunk65536 (the library with the previous eval_chunk_size, XLA on) is timed only
    # at these widths: at d = 1000 its passes would add a minute and a half to the run.
    # From this width on a full pass takes tens of seconds: no warm-up (tracing is a negligible
    # part of it; the first timed pass may be slower, the median of 3 discards it).
    self.no_warmup_width = 1000 if not quick else 10**9

  @property
  def peak_case(self):
    return 'matmul_{}x{}x{}'.format(*self.peak_shape)


def _bench(impl, factory, cases, baseline=False, warmup=None, **kwargs):
  return harness.BenchSpec(impl=impl, factory=f'benchmarks.cases:{factory}', kwargs=kwargs,
                           cases=cases, baseline=baseline, warmup=warmup or {})


def _reference_matmul(sizes, threads, width, repeats):
  """tf.matmul at the peak shape and at the full passes' layer shapes, timed within the group.

  The layer shapes are [chunk, d] x [d, d] for the library's eval_chunk_size and the previous one.
  Measured interleaved with the full passes they describe, so that load from other work on the
  machine affects both alike.
  """
  shapes = list(dict.fromkeys([sizes.peak_shape] + _layer_shapes(width)))
  cases = {'matmul_{}x{}x{}'.format(*s): repeats for s in shapes}
  return threads, _bench('tensorflow', 'make_tf_matmul', cases, shapes=shapes)


def benches(sizes, threads, data_path):
  """[(group, [(threads, BenchSpec)])] in running order."""
  r = sizes.repeats
  groups = []
  shapes = [sizes.peak_shape] + [s for d in (sizes.paper_width,) + tuple(sizes.scale_widths)
                                 for s in _layer_shapes(d)]
  shapes = list(dict.fromkeys(shapes))
  matmul_cases = {'matmul_{}x{}x{}'.format(*s): r['matmul'] for s in shapes}
  groups.append(('matmul', [
      (threads, _bench('tensorflow', 'make_tf_matmul', matmul_cases, shapes=shapes)),
      (threads, _bench('torch', 'make_torch_matmul', matmul_cases, shapes=shapes))]))

  actions = {'vanilla_epoch': 'epoch', 'vanilla_full_pass': 'full_pass'}
  both = {'vanilla_epoch': r['epoch'], 'vanilla_full_pass': r['full_pass']}
  paper = dict(width=sizes.paper_width, batch_size=10, actions=actions)
  tf_paper = dict(paper, peak_shape=sizes.peak_shape)
  vanilla = []
  for suffix, t in (('', threads), ('_1thread', 1)):
    vanilla.append((t, _bench(BASELINE + suffix, 'make_torch_vanilla', both, not suffix,
                              **paper)))
  for impl, overrides in (('quine_zoo', {}), ('quine_zoo_graph', GRAPH)):
    for suffix, t in (('', threads), ('_1thread', 1)):
      vanilla.append((t, _bench(impl + suffix, 'make_tf_vanilla', both, **overrides,
                                **tf_paper)))
  vanilla.append(_reference_matmul(sizes, threads, sizes.paper_width, r['full_pass']))
  groups.append(('paper_vanilla', vanilla))

  aux_cases = {'aux_epoch': r['aux']}
  aux_kwargs = dict(width=sizes.aux_width, data_path=data_path, actions={'aux_epoch': 'epoch'},
                    model=sizes.aux_model)
  aux = []
  for suffix, t in (('', threads), ('_1thread', 1)):
    aux.append((t, _bench(BASELINE + suffix, 'make_torch_aux', aux_cases, not suffix,
                          **aux_kwargs)))
  for impl, overrides in (('quine_zoo', {}), ('quine_zoo_graph', GRAPH)):
    for suffix, t in (('', threads), ('_1thread', 1)):
      aux.append((t, _bench(impl + suffix, 'make_tf_aux', aux_cases, **overrides,
                            **aux_kwargs)))
  groups.append(('paper_aux', aux))

  for d in sizes.scale_widths:
    pass_case, train_case = f'full_pass_w{d}', f'train_w{d}'
    actions = {pass_case: 'full_pass', train_case: 'steps'}
    pass_cases = {pass_case: r['scale_pass'](d)}
    warmup = {pass_case: 0} if d >= sizes.no_warmup_width else {}
    kwargs = dict(width=d, batch_size=sizes.scale_batch, actions=actions, steps=sizes.scale_steps,
                  warmup=warmup, peak_shape=sizes.peak_shape)
    scale_cases = {**pass_cases, train_case: r['scale_steps']}
    specs = [(threads, _bench(impl, 'make_tf_vanilla', scale_cases, **overrides, **kwargs))
             for impl, overrides in (('quine_zoo', {}), ('quine_zoo_graph', GRAPH))]
    if d in sizes.chunk_widths:
      specs.append((threads, _bench(f'quine_zoo_chunk{GRAPH_EVAL_CHUNK}', 'make_tf_vanilla',
                                    pass_cases, eval_chunk_size=GRAPH_EVAL_CHUNK, **kwargs)))
    specs.append(_reference_matmul(sizes, threads, d, max(pass_cases[pass_case],
                                                          r['scale_steps'])))
    groups.append((f'scale_w{d}', specs))
  return groups


def plan(groups, quick, threads):
  """[(group, [WorkerSpec])]: a worker per bench; for --quick, one per framework for all groups.

  The smoke run keeps only the default-thread benches: a TensorFlow process takes seconds to start.
  """
  if not quick:
    return [(g, [harness.WorkerSpec([b], t) for t, b in items]) for g, items in groups]
  tf_benches, torch_benches = [], []
  matmul_seen = False
  for _, items in groups:
    for t, b in items:
      if t != threads or (b.factory.endswith('make_tf_matmul') and matmul_seen):
        continue  # the groups' reference matmuls repeat the matmul group's shapes
      matmul_seen |= b.factory.endswith('make_tf_matmul')
      (torch_benches if 'torch' in b.factory else tf_benches).append(b)
  return [('quick', [harness.WorkerSpec(torch_benches, threads),
                     harness.WorkerSpec(tf_benches, threads)])]


# --------------------------------------------------------------------------- results


def _finish_rows(rows, peak_case):
  """Adds throughput, GFLOP/s, fractions of the matmul peaks and ratios to the baseline."""
  by_case = {(r['group'], r['case'], r['impl']): r for r in rows}

  def gflops_of(group, case, impl='tensorflow'):
    row = by_case.get((group, case, impl))
    return row['flops'] / row['seconds'] / 1e9 if row else None

  for row in rows:
    group = row['group']
    peak_gflops = gflops_of(group, peak_case) or gflops_of('matmul', peak_case)
    scale = row.pop('scale_to_epoch', None)
    if scale:
      row['measured_seconds'] = row['seconds']
      row['seconds'] *= scale
      row['cpu_seconds'] *= scale
      row['extrapolated'] = (f"epoch time = {row['measured_steps']} steps x "
                             f"{scale:.4g} (epoch of {row['epoch_steps']} steps)")
    seconds = row['seconds']
    flops = row.get('flops')
    row['gflops'] = flops / seconds / 1e9 if flops else None
    row['throughput'] = row.pop('units') / seconds if 'units' in row else row['gflops']
    row['throughput_unit'] = row.pop('unit', 'GFLOP/s')
    paired = row.pop('paired_peak_gflops', None)
    if paired and flops:
      # Repeat by repeat against the matmul timed around it (the warm-ups came first).
      paired = paired[-len(row['repeats_s']):]
      peak_gflops = statistics.median(paired)
      row['fraction_of_matmul_peak'] = statistics.median(
          flops / t / 1e9 / g for t, g in zip(row['repeats_s'], paired))
      row['matmul_peak'] = 'paired'
    else:
      row['fraction_of_matmul_peak'] = (row['gflops'] / peak_gflops
                                        if row['gflops'] and peak_gflops else None)
      row['matmul_peak'] = 'group median'
    row['matmul_peak_gflops'] = peak_gflops
    same_gflops = None
    if 'eval_chunk_size' in row:
      d = row['width']
      same_case = f"matmul_{row['eval_chunk_size']}x{d}x{d}"
      same_gflops = gflops_of(group, same_case) or gflops_of('matmul', same_case)
    row['same_shape_peak_gflops'] = same_gflops
    row['fraction_of_same_shape_peak'] = row['gflops'] / same_gflops if same_gflops else None
    base = by_case.get((group, row['case'], BASELINE))
    row['ratio_to_baseline'] = base['seconds'] / seconds if base else None
    # The baseline runs with the same threads as TensorFlow; PyTorch eager is sometimes faster on
    # one thread (tiny ops, or a loaded machine), so the speed-up over its faster setting is given
    # too.
    torch_seconds = [r['seconds'] for (g, c, i), r in by_case.items()
                     if g == group and c == row['case'] and i.startswith(BASELINE)]
    row['ratio_to_best_torch'] = min(torch_seconds) / seconds if torch_seconds else None
  return rows


def _by_case(rows):
  """Rows of one case next to each other, in order of first appearance (stable otherwise)."""
  first = {}
  for row in rows:
    first.setdefault((row['group'], row['case']), len(first))
  return sorted(rows, key=lambda r: first[(r['group'], r['case'])])


def _group_of(case):
  if case.startswith('matmul'):
    return 'matmul'
  if case.startswith(('full_pass_w', 'train_w')):
    return 'scale_w' + case.rsplit('_w', 1)[1]
  return 'paper_aux' if case.startswith('aux') else 'paper_vanilla'


def fit_exponent(ns, values):
  """Least-squares slope of log(value) against log(N)."""
  return float(np.polyfit(np.log(ns), np.log(values), 1)[0])


def scaling(rows, impls):
  """Time and memory against N over the scale groups, with fitted exponents, per implementation.

  Returns:
    {impl: {'points': [...], 'full_pass_s_exponent': k, ...}} for each impl with >= 2 widths.
  """
  out = {}
  for impl in impls:
    points = {}
    for row in rows:
      if row['impl'] != impl or not row['group'].startswith('scale_w'):
        continue
      point = points.setdefault(row['num_weights'], {'num_weights': row['num_weights'],
                                                     'width': row['width']})
      key = 'full_pass_s' if row['case'].startswith('full_pass_w') else 'epoch_s'
      point[key] = row['seconds']
      point[key.replace('_s', '_cpu_s')] = row['cpu_seconds']
      point['peak_rss_mb'] = row['peak_rss_mb']
    points = [points[n] for n in sorted(points)]
    if len(points) < 2:
      continue
    fit = {'points': points}
    for key in ('full_pass_s', 'epoch_s', 'full_pass_cpu_s', 'epoch_cpu_s', 'peak_rss_mb'):
      have = [p for p in points if key in p]
      if len(have) >= 2:
        fit[f'{key}_exponent'] = fit_exponent([p['num_weights'] for p in have],
                                              [p[key] for p in have])
    out[impl] = fit
  return out


def _fmt(value, spec):
  return '-' if value is None else format(value, spec)


def table(rows):
  """The results as a Markdown table."""
  lines = ['| group | case | impl | seconds | CPU s | throughput | GFLOP/s | of peak | '
           'of same shape | speed-up vs torch | vs best torch | peak RSS MB |',
           '|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|']
  for r in rows:
    unit = r['throughput_unit'].replace('coordinates/s', 'coord/s').replace('predictions/s',
                                                                            'pred/s')
    seconds = r['seconds']
    lines.append(
        f"| {r['group']} | {r['case']} | {r['impl']} | "
        f"{seconds:.4g}{'*' if r.get('extrapolated') else ''} | "
        f"{_fmt(r['cpu_seconds'], '.4g')} | "
        f"{_fmt(r['throughput'], '.3g')} {unit} | {_fmt(r['gflops'], '.1f')} | "
        f"{_fmt(r['fraction_of_matmul_peak'], '.0%')} | "
        f"{_fmt(r['fraction_of_same_shape_peak'], '.0%')} | "
        f"{_fmt(r['ratio_to_baseline'], '.2f')} | {_fmt(r['ratio_to_best_torch'], '.2f')} | "
        f"{r['peak_rss_mb']:.0f} |")
  return '\n'.join(lines)


def scaling_table(fits):
  """The scale groups as a Markdown table per implementation, with the fitted exponents."""
  lines = []
  for impl, fit in fits.items():
    lines += [f'{impl}:', '',
              '| N | width | full pass s | epoch s (extrapolated) | peak RSS MB |',
              '|---:|---:|---:|---:|---:|']
    for p in fit['points']:
      lines.append(f"| {p['num_weights']:,} | {p['width']} | "
                   f"{_fmt(p.get('full_pass_s'), '.4g')} | {_fmt(p.get('epoch_s'), '.4g')} | "
                   f"{p['peak_rss_mb']:.0f} |")
    exponents = [f"{name} k = {fit[key]:.2f}" for name, key in (
        ('full pass', 'full_pass_s_exponent'), ('epoch', 'epoch_s_exponent'),
        ('full pass CPU time', 'full_pass_cpu_s_exponent'),
        ('epoch CPU time', 'epoch_cpu_s_exponent'),
        ('peak RSS', 'peak_rss_mb_exponent')) if key in fit]
    lines += ['', 'Fitted exponents (time or memory ~ N^k): ' + ', '.join(exponents), '']
  return '\n'.join(lines)


def environment(threads, data):
  from importlib import metadata  # pylint: disable=g-import-not-at-top
  cpu = platform.processor()
  try:
    with open('/proc/cpuinfo') as f:
      cpu = next(line.split(':', 1)[1].strip() for line in f if line.startswith('model name'))
  except (OSError, StopIteration):
    pass
  versions = {}
  for package in ('tensorflow-cpu', 'tensorflow', 'keras', 'torch', 'numpy'):
    try:
      versions[package] = metadata.version(package)
    except metadata.PackageNotFoundError:
      pass
  return {'cpu': cpu, 'cpu_count': os.cpu_count(), 'threads': threads,
          'python': platform.python_version(),
          'versions': versions, 'aux_data': data,
          'command': ' '.join(['python', 'benchmarks/run.py'] + sys.argv[1:])}


def _prepare_data(path, quick, data_dir):
  """Writes the aux group's arrays to `path`; returns what they are."""
  if not quick:
    try:
      harness.run_in_process(cases.save_mnist, path, data_dir)
      return 'mnist'
    except harness.WorkerError as e:
      print(f'MNIST not available ({str(e).strip().splitlines()[-1]}); using random arrays '
            'of the same shapes', flush=True)
      harness.run_in_process(cases.save_random_mnist, path, 60000, 10000)
      return 'random'
  harness.run_in_process(cases.save_random_mnist, path)
  return 'random'


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments {argv[1:]}')
  sizes = Sizes(_QUICK.value)
  threads = _THREADS.value
  start = time.perf_counter()
  with tempfile.TemporaryDirectory() as tmp:
    data_path = os.path.join(tmp, 'mnist.npz')
    groups = benches(sizes, threads, data_path)
    names = [g for g, _ in groups]
    wanted = _GROUPS.value or names
    unknown = set(wanted) - set(names)
    if unknown:
      raise app.UsageError(f'unknown groups {sorted(unknown)}; groups are {names}')
    groups = [(g, items) for g, items in groups if g in wanted]
    data = None
    if 'paper_aux' in wanted:
      data = _prepare_data(data_path, sizes.quick, _DATA_DIR.value)
    rows, errors = [], []
    for group, specs in plan(groups, sizes.quick, threads):
      t0 = time.perf_counter()
      load_before = os.getloadavg()[0]
      print(f'[{group}] load average {load_before:.1f}', flush=True)
      try:
        results = harness.run_group(specs, log=lambda m: print(m, flush=True))
      except harness.WorkerError as e:
        # One broken group (a worker that crashed, say) should not lose the others' numbers.
        print(f'  FAILED: {e}', flush=True)
        errors.append({'group': group, 'error': str(e)})
        continue
      load_after = os.getloadavg()[0]
      for row in results:
        row['group'] = group if group != 'quick' else _group_of(row['case'])
        # Other work on the machine: the 1-minute load average before and after the group.
        row['load_average'] = [load_before, load_after]
      rows.extend(results)
      print(f'  done in {time.perf_counter() - t0:.0f} s, load average {load_after:.1f}',
            flush=True)
  rows = _finish_rows(_by_case(rows), sizes.peak_case)
  fit = scaling(rows, ('quine_zoo', 'quine_zoo_graph'))
  print()
  print(table(rows))
  if fit:
    print()
    print(scaling_table(fit))
  total = time.perf_counter() - start
  print(f'\n{len(rows)} rows in {total:.0f} s; speed-up = {BASELINE} seconds / row seconds; '
        '* = extrapolated from a block of steps.')
  if _OUTPUT.value:
    out = {'environment': environment(threads, data), 'quick': sizes.quick,
           'matmul_peak_case': sizes.peak_case, 'total_seconds': total, 'results': rows,
           'scaling': fit, 'errors': errors}
    os.makedirs(os.path.dirname(os.path.abspath(_OUTPUT.value)), exist_ok=True)
    with open(_OUTPUT.value, 'w') as f:
      json.dump(out, f, indent=1, allow_nan=False)
    print(f'wrote {_OUTPUT.value}')
  if errors:
    print(f'{len(errors)} group(s) failed: {[e["group"] for e in errors]}')
    return 1
  return 0


if __name__ == '__main__':
  app.run(main)
