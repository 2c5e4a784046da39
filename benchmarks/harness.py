"""Interleaved timing in isolated worker processes.

In a full run every implementation of a case runs in its own worker process (multiprocessing
'spawn'), so that its peak resident memory is its own, its thread settings are its own, and
TensorFlow and PyTorch never share a process. The workers of one group are alive together but
never run at the same time: the parent asks them in turn for one repeat each, round after round, so
a burst of load from other work on the machine hits every implementation alike; the median over
the rounds is reported. (A smoke run packs the benches of each framework into one worker, because
starting a TensorFlow process takes seconds; its memory figures are then shared.)

A worker's stderr (TensorFlow's start-up chatter) goes to a log file, whose tail is shown if the
worker fails.
"""

import dataclasses
import importlib
import multiprocessing
import os
import resource
import statistics
import sys
import tempfile
import time
import traceback

# Between two measurements: lets the previous worker's spinning threads (OpenMP, Eigen) go to
# sleep before the next one starts its clock.
_SETTLE_S = 0.05


@dataclasses.dataclass
class BenchSpec:
  """One implementation, built in a worker by `factory(threads=..., **kwargs)`.

  Attributes:
    impl: the implementation's label in the results.
    factory: 'module:function' building the bench object.
    kwargs: keyword arguments of the factory (plain Python values).
    cases: {case name: number of timed repeats} this bench measures.
    baseline: whether this implementation is its cases' baseline.
    warmup: {case name: untimed runs} where it differs from the worker's `warmup` (a full pass
      of minutes needs none: its tracing is a negligible part of it).
  """
  impl: str
  factory: str
  kwargs: dict
  cases: dict
  baseline: bool = False
  warmup: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class WorkerSpec:
  """A worker process and the benches it hosts.

  Attributes:
    benches: the BenchSpecs built in this process.
    threads: TensorFlow intra- and inter-op threads (and torch.set_num_threads); 0 = defaults.
    env: environment variables set before any framework is imported.
    warmup: untimed runs of each case before the timed ones (tracing, compilation, caches).
    tree: another checkout whose `models`, `trainers` and `export` the worker imports instead of
      this one's (to time a candidate change of the library against the current one).
  """
  benches: list
  threads: int = 0
  env: dict = dataclasses.field(default_factory=dict)
  warmup: int = 1
  tree: str = None

  @property
  def label(self):
    return '+'.join(b.impl for b in self.benches)


def peak_rss_mb():
  """This process's peak resident set size in MiB (Linux reports ru_maxrss in KiB)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _redirect_stderr(log_path):
  fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
  os.dup2(fd, 2)
  os.close(fd)


def _worker_main(conn, spec, sys_path, log_path):
  """Builds the benches, warms them up, then answers ('run'|'info', bench, case) and ('exit',)."""
  sys.path[:] = ([os.path.abspath(spec.tree)] if spec.tree else []) + sys_path
  _redirect_stderr(log_path)
  os.environ.update(spec.env)
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  try:
    benches = []
    for b in spec.benches:
      module_name, function_name = b.factory.split(':')
      factory = getattr(importlib.import_module(module_name), function_name)
      benches.append(factory(threads=spec.threads, **b.kwargs))
    for bench, b in zip(benches, spec.benches):
      for case in b.cases:
        for _ in range(b.warmup.get(case, spec.warmup)):
          bench.run(case)
    conn.send(('ok', None))
  except Exception:  # pylint: disable=broad-except
    conn.send(('error', traceback.format_exc()))
    return
  while True:
    message = conn.recv()
    if message[0] == 'exit':
      conn.send(('ok', None))
      return
    kind, index, case = message
    try:
      if kind == 'run':
        reply = ('ok', tuple(float(x) for x in benches[index].run(case)))
      else:
        reply = ('ok', dict(benches[index].info(case), peak_rss_mb=peak_rss_mb()))
    except Exception:  # pylint: disable=broad-except
      reply = ('error', traceback.format_exc())
    conn.send(reply)


class WorkerError(RuntimeError):
  """A worker failed; the message holds its traceback."""


def _tail(path, num_lines=30):
  try:
    with open(path, errors='replace') as f:
      return ''.join(f.readlines()[-num_lines:])
  except OSError:
    return ''


class Worker:
  """The parent's handle on one worker process."""

  def __init__(self, spec, timeout_s, log_dir):
    self.spec = spec
    self._timeout_s = timeout_s
    self._log_path = os.path.join(log_dir, f'worker_{id(self)}.log')
    context = multiprocessing.get_context('spawn')
    self._conn, child_conn = context.Pipe()
    self._process = context.Process(
        target=_worker_main, args=(child_conn, spec, list(sys.path), self._log_path), daemon=True)
    self._process.start()
    child_conn.close()
    self._receive()

  def _fail(self, message):
    tail = _tail(self._log_path)
    return WorkerError(f'{self.spec.label}: {message}' +
                       (f'\n--- worker stderr (tail) ---\n{tail}' if tail else ''))

  def _receive(self):
    if not self._conn.poll(self._timeout_s):
      self.close()
      raise self._fail(f'no answer in {self._timeout_s} s')
    try:
      status, value = self._conn.recv()
    except EOFError:
      self._process.join(5)
      raise self._fail(f'the worker died (exit code {self._process.exitcode})') from None
    if status == 'error':
      raise self._fail(f'failed:\n{value}')
    return value

  def run(self, index, case):
    self._conn.send(('run', index, case))
    return self._receive()

  def info(self, index, case):
    self._conn.send(('info', index, case))
    return self._receive()

  def close(self):
    if self._process.is_alive():
      try:
        self._conn.send(('exit',))
        self._conn.poll(10)
      except (BrokenPipeError, OSError):
        pass
      self._process.join(10)
      if self._process.is_alive():
        self._process.kill()
        self._process.join()


def run_group(specs, timeout_s=1800, log=print):
  """Runs the workers of one group interleaved; returns one result dict per (case, impl).

  Workers start one after the other (each compiles and warms up alone), then round r asks every
  bench of every worker for repeat r of each of its cases in turn.

  Returns:
    A list of dicts with 'case', 'impl', 'baseline', 'threads', 'seconds' (median wall time),
    'cpu_seconds' (median CPU time of the worker process, all its threads), 'repeats_s' and the
    bench's info for that case (including its worker's 'peak_rss_mb').
  """
  workers = []
  with tempfile.TemporaryDirectory() as log_dir:
    try:
      for spec in specs:
        t0 = time.perf_counter()
        workers.append(Worker(spec, timeout_s, log_dir))
        log(f'  started {spec.label} ({time.perf_counter() - t0:.1f} s with warm-up)')
      entries = [(w, i, b, case) for w in workers for i, b in enumerate(w.spec.benches)
                 for case in b.cases]
      times = {(id(w), i, case): [] for w, i, _, case in entries}
      rounds = max(b.cases[case] for _, _, b, case in entries)
      for r in range(rounds):
        for w, i, b, case in entries:
          if r < b.cases[case]:
            time.sleep(_SETTLE_S)
            times[(id(w), i, case)].append(w.run(i, case))
      results = []
      for w, i, b, case in entries:
        wall, cpu = zip(*times[(id(w), i, case)])
        results.append(dict(case=case, impl=b.impl, baseline=b.baseline,
                            threads=w.spec.threads, seconds=statistics.median(wall),
                            cpu_seconds=statistics.median(cpu), repeats_s=list(wall),
                            **w.info(i, case)))
      return results
    finally:
      for w in workers:
        w.close()


def _call(conn, target, args, sys_path, log_path):
  sys.path[:] = sys_path
  _redirect_stderr(log_path)
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  try:
    target(*args)
    conn.send(('ok', None))
  except Exception:  # pylint: disable=broad-except
    conn.send(('error', traceback.format_exc()))


def run_in_process(target, *args):
  """Calls target(*args) in a fresh process (so that what it imports stays there).

  Raises:
    WorkerError: it raised (the message holds its traceback) or died.
  """
  context = multiprocessing.get_context('spawn')
  parent_conn, child_conn = context.Pipe()
  with tempfile.TemporaryDirectory() as log_dir:
    log_path = os.path.join(log_dir, 'call.log')
    process = context.Process(target=_call,
                              args=(child_conn, target, args, list(sys.path), log_path))
    process.start()
    child_conn.close()
    try:
      status, value = parent_conn.recv()
    except EOFError:
      process.join()
      raise WorkerError(f'{target.__name__} died (exit code {process.exitcode})\n'
                        f'{_tail(log_path)}') from None
    process.join()
  if status == 'error':
    raise WorkerError(value)
