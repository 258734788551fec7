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


def test_ternary_cnn_within_one_point_with_residual_levels():
    """The digits CNN converted whole to 8-bit activations × ternary weights (quantize_model with
    weights="ternary"), residual levels lowered at inference: some level within 1 pp of float32
    while multiplying less than 8a-8w (one multiply per ternary block and output position against
    one per weight); every level adds blocks, so fewer levels multiply less."""
    model, acc32 = studies.train_ternary_cnn()
    assert acc32 > 0.85  # it learned
    acc8, rows = studies.ternary_cnn_table(model, max_residuals=3)
    assert [r["residuals"] for r in rows] == [0, 1, 2, 3]
    assert all(a["blocks"] < b["blocks"] and a["reduction"] > b["reduction"] for a, b in zip(rows, rows[1:]))
    close = [r for r in rows if r["accuracy"] >= acc32 - 0.01]
    assert close, (rows, acc32)
    assert close[0]["reduction"] > 1, close[0]
    assert rows[0]["accuracy"] < max(r["accuracy"] for r in rows)  # residual levels buy accuracy back
    assert acc8 >= acc32 - 0.01  # the 8a-8w row it is compared with
