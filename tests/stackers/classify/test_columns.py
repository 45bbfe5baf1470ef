"""ColumnEncoder: the table columns beside the scores; numbers stay numbers, the rest are categories, state is JSON."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from stackers.classify._columns import ColumnEncoder


def test_numbers_stay_numbers_and_the_rest_are_categories_through_a_json_round_trip():
    train = pd.DataFrame({"price": [1.0, np.nan, 3.0], "dept": ["a", "b", None],
                          "shelf": pd.Series([1, 2, 1], dtype="category")})
    enc = ColumnEncoder().fit(train)
    assert enc.numeric_names == ["price"] and [c.name for c in enc.categorical] == ["dept", "shelf"]
    again = ColumnEncoder.from_state(json.loads(json.dumps(enc.state())))
    new = pd.DataFrame({"price": [np.nan, 5.0], "dept": ["b", "unseen"], "shelf": pd.Series([2, 1])})
    for e in (enc, again):
        np.testing.assert_array_equal(e.numeric(new, impute=True), [[2.0], [5.0]])  # the training mean fills
        np.testing.assert_array_equal(e.codes(new), [[1, 1], [np.nan, 0]])  # unseen: no category
        np.testing.assert_array_equal(e.onehot(new), [[0, 1, 0, 1], [0, 0, 1, 0]])
    assert again.onehot_names() == ["dept=a", "dept=b", "shelf=1", "shelf=2"]
