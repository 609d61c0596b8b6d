import math

import numpy as np
import pytest

from clbench.metrics import METRIC_KEYS, METRIC_NAMES, compute, curves

# Row 0 is zero-shot; row k is right after training on task k.
R3 = [
    [0.10, 0.20, 0.30],
    [0.70, 0.25, 0.35],
    [0.90, 0.80, 0.40],
    [0.60, 0.75, 0.95],
]
S3 = [0.95, 0.90, 0.80]


def same(x: float, y: float) -> bool:
    return (math.isnan(x) and math.isnan(y)) or x == pytest.approx(y)


def test_keys_and_names():
    assert METRIC_KEYS == ("aa", "aia", "fgt", "bwt", "fwd", "fwt")
    assert set(METRIC_NAMES) == {*METRIC_KEYS, "gf"}  # gf comes from the probe matrix
    assert METRIC_NAMES["fwt"] == "zero-shot forward transfer"
    assert tuple(compute(R3)) == METRIC_KEYS


def test_t3_by_hand():
    m = compute(R3, S3)
    # aa  = (0.60 + 0.75 + 0.95) / 3 = 2.30 / 3
    assert m["aa"] == pytest.approx(2.30 / 3)
    # aia = (0.70 + (0.90 + 0.80) / 2 + 2.30 / 3) / 3 = (0.70 + 0.85 + 0.7667) / 3
    assert m["aia"] == pytest.approx((0.70 + 0.85 + 2.30 / 3) / 3)
    # fgt = ((max(0.70, 0.90) - 0.60) + (0.80 - 0.75)) / 2 = (0.30 + 0.05) / 2 = 0.175
    assert m["fgt"] == pytest.approx(0.175)
    # bwt = ((0.60 - 0.70) + (0.75 - 0.80)) / 2 = (-0.10 - 0.05) / 2 = -0.075
    assert m["bwt"] == pytest.approx(-0.075)
    # fwd = ((0.80 - 0.90) + (0.95 - 0.80)) / 2 = (-0.10 + 0.15) / 2 = 0.025  (task 1 excluded)
    assert m["fwd"] == pytest.approx(0.025)
    # fwt = ((0.25 - 0.20) + (0.40 - 0.30)) / 2 = (0.05 + 0.10) / 2 = 0.075
    assert m["fwt"] == pytest.approx(0.075)


def test_t1_only_averages_defined():
    m = compute([[0.2], [0.7]], [0.9])
    assert m["aa"] == pytest.approx(0.7)
    assert m["aia"] == pytest.approx(0.7)
    for key in ("fgt", "bwt", "fwd", "fwt"):
        assert math.isnan(m[key]), key


def test_fwd_nan_without_single_task():
    m = compute(R3)
    assert math.isnan(m["fwd"])
    assert m["fwt"] == pytest.approx(0.075)


def test_fwd_nan_when_needed_reference_missing():
    assert math.isnan(compute(R3, [0.95, 0.90, None])["fwd"])


def test_fgt_ignores_zero_shot_row():
    # Task 1: row 0 = 0.95 would give 0.95 - 0.40 = 0.55; the right max is row 1: 0.60 - 0.40.
    m = compute([[0.95, 0.1], [0.60, 0.2], [0.40, 0.8]])
    assert m["fgt"] == pytest.approx(0.20)


def test_fgt_excludes_last_row_from_max():
    # max over l=1..T-1 is 0.50, so fgt = 0.50 - 0.70 = -0.20 (not 0).
    assert compute([[0.0, 0.0], [0.50, 0.1], [0.70, 0.9]])["fgt"] == pytest.approx(-0.20)


def test_fgt_max_at_intermediate_row():
    r = [
        [0.0, 0.0, 0.0],
        [0.5, 0.1, 0.1],
        [0.9, 0.7, 0.1],
        [0.6, 0.7, 0.9],
    ]
    # task 1: max(0.5, 0.9) - 0.6 = 0.3; task 2: 0.7 - 0.7 = 0 -> (0.3 + 0) / 2
    assert compute(r)["fgt"] == pytest.approx(0.15)


def test_missing_upper_triangle():
    lower = [
        [None, None, None],
        [0.70, None, None],
        [0.90, 0.80, None],
        [0.60, 0.75, 0.95],
    ]
    m, full = compute(lower, S3), compute(R3, S3)
    for key in ("aa", "aia", "fgt", "bwt", "fwd"):
        assert m[key] == pytest.approx(full[key]), key
    assert math.isnan(m["fwt"])


def test_missing_cell_in_last_row():
    r = [row[:] for row in R3]
    r[3][1] = None
    m = compute(r)
    for key in ("aa", "aia", "fgt", "bwt"):
        assert math.isnan(m[key]), key
    assert m["fwt"] == pytest.approx(0.075)


def test_nan_treated_like_none():
    with_none = [row[:] for row in R3]
    with_nan = [row[:] for row in R3]
    with_none[0][2], with_none[3][0] = None, None
    with_nan[0][2], with_nan[3][0] = float("nan"), np.nan
    a, b = compute(with_none, S3), compute(with_nan, S3)
    assert all(same(a[k], b[k]) for k in METRIC_KEYS)
    assert math.isnan(a["fwt"]) and math.isnan(a["aa"])


def test_numpy_input():
    m = compute(np.array(R3), np.array(S3))
    assert all(same(m[k], v) for k, v in compute(R3, S3).items())


def test_list_of_numpy_rows():
    assert compute([np.array(row) for row in R3])["bwt"] == pytest.approx(-0.075)


def test_numpy_object_array_with_none():
    r = np.array(R3, dtype=object)
    r[0, 1] = None
    assert math.isnan(compute(r)["fwt"])


def test_returns_python_floats():
    for value in compute(np.array(R3, dtype=np.float32), S3).values():
        assert type(value) is float
    for values in curves(R3, S3).values():
        assert all(type(v) is float for v in values)


@pytest.mark.parametrize(
    ("matrix", "single_task", "message"),
    [
        ([[0.1, 0.2], [0.3, 0.4]], None, r"T\+1 rows for T columns; got 2 rows and 2 columns"),
        ([[0.1, 0.2], [0.3], [0.5, 0.6]], None, r"matrix row 1 has 1 cells, expected 2"),
        ([[0.1], [math.inf]], None, r"matrix\[1\]\[0\] is infinite"),
        ([[0.1], [-math.inf]], None, r"matrix\[1\]\[0\] is infinite"),
        ([[0.1], ["0.5"]], None, r"matrix\[1\]\[0\] is a str"),
        ([[0.1], [True]], None, r"matrix\[1\]\[0\] is a bool \(True\)"),
        (np.array([[True], [False]]), None, r"matrix\[0\]\[0\] is a bool \(True\)"),
        ([[0.1], [np.bool_(False)]], None, r"matrix\[1\]\[0\] is a bool \(False\)"),
        ([[0.1], [[0.5]]], None, r"matrix\[1\]\[0\] is a list"),
        ([0.1, 0.2], None, r"matrix row 0 is a float, not a sequence"),
        (np.array([0.1, 0.2]), None, r"matrix must be 2-D"),
        ([], None, r"matrix is empty"),
        (np.zeros((0, 0)), None, r"matrix is empty"),
        ([[]], None, r"no columns"),
        ("abc", None, r"matrix must be a 2-D nested sequence; got str"),
        (R3, [0.9, 0.9], r"single_task has 2 values, expected T = 3"),
        (R3, [0.9, "x", 0.9], r"single_task\[1\] is a str"),
        (R3, [0.9, math.inf, 0.9], r"single_task\[1\] is infinite"),
        (R3, 0.9, r"single_task must be a sequence; got float"),
    ],
)
def test_bad_input_raises(matrix, single_task, message):
    with pytest.raises(ValueError, match=message):
        compute(matrix, single_task)
    with pytest.raises(ValueError, match=message):
        curves(matrix, single_task)


def test_out_of_range_values_allowed():
    assert compute([[-0.5], [1.5]])["aa"] == pytest.approx(1.5)


def test_curves_shape_and_last_entry():
    c, full = curves(R3, S3), compute(R3, S3)
    assert tuple(c) == tuple(f"{k}_k" for k in METRIC_KEYS)
    for key in METRIC_KEYS:
        assert len(c[f"{key}_k"]) == 3
        assert same(c[f"{key}_k"][-1], full[key]), key
    assert math.isnan(c["fgt_k"][0]) and c["aa_k"][0] == pytest.approx(0.70)


def test_curves_entry_matches_sub_matrix():
    sub = compute([[0.10, 0.20], [0.70, 0.25], [0.90, 0.80]], S3[:2])
    c = curves(R3, S3)
    for key in METRIC_KEYS:
        assert same(c[f"{key}_k"][1], sub[key]), key
    # By hand for k=2: bwt = 0.90 - 0.70 = 0.20, fwt = 0.25 - 0.20 = 0.05
    assert c["bwt_k"][1] == pytest.approx(0.20)
    assert c["fwt_k"][1] == pytest.approx(0.05)


def test_curves_without_single_task():
    assert all(math.isnan(v) for v in curves(R3)["fwd_k"])


def test_general_forgetting_is_row_0_minus_the_last_row():
    from clbench.metrics import general_forgetting

    probes = [[0.6, 0.5, None], [0.2, 0.9, 0.4], [0.45, 0.55, 0.3]]
    assert general_forgetting(probes) == pytest.approx([0.15, -0.05, None])
