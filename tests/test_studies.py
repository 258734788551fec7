"""The digits studies (brgemm.studies) : a network trained in DFP-16 within 0.5 pp
of the float32 one trained from the same initial weights, and the float32 network with ternary
residual weights and 8-bit activations within 1 pp with three residual levels (20 epochs here, 40 in the study)."""

import pytest

pytest.importorskip("sklearn")

from brgemm import studies  # noqa: E402


def test_dfp16_training_and_ternary_residuals_on_digits():
    layers, acc32 = studies.train("float32", epochs=20)
    _, acc16 = studies.train("dfp16", epochs=20)
    assert acc32 > 0.85  # it learned
    assert abs(acc16 - acc32) <= 0.005, (acc16, acc32)
    table = studies.ternary_table(layers, max_residuals=3)
    assert [r for r, _, _ in table] == [0, 1, 2, 3]
    accs = [a for _, a, _ in table]
    assert accs[3] >= acc32 - 0.01, (accs, acc32)
    assert accs[0] <= accs[3]  # residual levels buy accuracy back
