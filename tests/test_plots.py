"""Tests of trainers.plots: the training curves a run writes to plots/curves.png."""

from absl.testing import absltest
import numpy as np

from trainers import plots


def _records(aux, rho_end=5e-15):
  rhos = np.geomspace(1.0, rho_end, 30)
  records = [{'phase': p, 'l_sr': 10 * r, 'rho': r, 'weight_rms': 0.1} for p, r in enumerate(rhos)]
  if aux:
    for r in records:
      r['test_accuracy'] = 0.9
  return records


class CurvesTest(absltest.TestCase):

  def test_an_auxiliary_run_gets_a_test_accuracy_panel(self):
    titles = [ax.get_title() for ax in plots.curves_figure(_records(aux=True)).axes]
    self.assertEqual(titles, ['l_sr', 'rho', 'weight_rms', 'test_accuracy'])
    titles = [ax.get_title() for ax in plots.curves_figure(_records(aux=False)).axes]
    self.assertEqual(titles, ['l_sr', 'rho', 'weight_rms'])

  def test_rho_is_on_a_log_axis_so_a_quine_at_1e_15_is_not_a_flat_zero(self):
    fig = plots.curves_figure(_records(aux=False))
    rho = fig.axes[1]
    self.assertEqual(rho.get_yscale(), 'log')
    self.assertLess(rho.get_ylim()[0], 1e-14)

  def test_zeros_are_left_out_of_log_panels_and_said(self):
    records = _records(aux=False) + [{'phase': 30, 'l_sr': 0.0, 'rho': 0.0, 'weight_rms': 0.0}]
    titles = [ax.get_title() for ax in plots.curves_figure(records).axes]
    self.assertEqual(titles[1], 'rho (1 zero not shown)')

  def test_the_title_has_room_of_its_own(self):
    # A constrained layout places the suptitle above the panels' titles (they overlapped).
    fig = plots.curves_figure(_records(aux=True), title='replicate (adam)')
    self.assertEqual(type(fig.get_layout_engine()).__name__, 'ConstrainedLayoutEngine')
    self.assertTrue(plots.curves_png(_records(aux=True)).startswith(b'\x89PNG'))


if __name__ == '__main__':
  absltest.main()
