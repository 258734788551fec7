"""The digits studies (brgemm.studies) : a CNN and an MLP trained in DFP-16 within 0.5 pp
of the float32 ones trained from the same initial weights, and the float32 network with ternary
residual weights and 8-bit activations within 1 pp with two residual levels."""

import pytest

pytest.importorskip("sklearn")

from brgemm import studies  # noqa: E402


def test_dfp16_training_and_ternary_residuals_on_digits():
    layers, acc32 = studies.train("float32")
    _, acc16 = studies.train("dfp16")
    assert acc32 > 0.85  # it learned
    assert abs(acc16 - acc32) <= 0.005, (acc16, acc32)
    table = studies.ternary_table(layers, max_residuals=2)
    assert [r for r, _, _ in table] == [0, 1, 2]
    accs = [a for _, a, _ in table]
    assert accs[2] >= acc32 - 0.01, (accs, acc32)
    assert accs[0] < accs[2]  # residual levels buy accuracy back


def test_dfp16_cnn_on_digits():
    _, acc32 = studies.train_cnn("float32")
    _, acc16 = studies.train_cnn("dfp16")
    assert acc32 > 0.85  # it learned
    assert abs(acc16 - acc32) <= 0.005, (acc16, acc32)
