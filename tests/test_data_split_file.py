"""Split files: one CSV format for images and cases, the legacy JSON read, and every mismatch error."""

import json

import pytest

from fedml_prr.data.split_file import (
    SplitRow,
    assign_splits,
    read_split_file,
    rows_of_assignment,
    write_split_file,
)


def test_round_trip_keeps_rows_in_order_with_extra_columns(tmp_path):
    rows = [("img2", "B", "test", "mel", "L1"), ("img1", "A", "train", "nv", "img1")]
    path = write_split_file(tmp_path / "deep" / "split.csv", rows, extra_columns=("label", "lesion_id"))
    assert path.read_text().splitlines()[0] == "image_id,client,split,label,lesion_id"
    assert read_split_file(path) == [SplitRow("img2", "B", "test"), SplitRow("img1", "A", "train")]
    assert [p.name for p in path.parent.iterdir()] == ["split.csv"]  # written atomically, nothing left over


def test_case_ids_may_repeat_across_clients(tmp_path):
    assignment = {"HK": {"train": ["Case00", "Case01"], "test": ["Case02"]}, "UCL": {"valid": ["Case00"]}}
    path = write_split_file(tmp_path / "s.csv", rows_of_assignment(assignment), item_column="case_id")
    rows = read_split_file(path, item_column="case_id")
    expected = [("HK", "Case00"), ("HK", "Case01"), ("HK", "Case02"), ("UCL", "Case00")]
    assert assign_splits(rows, expected, path, noun="case") == {
        ("HK", "Case00"): "train", ("HK", "Case01"): "train", ("HK", "Case02"): "test", ("UCL", "Case00"): "valid"}
    with pytest.raises(ValueError, match=r"missing column\(s\) \['image_id'\]"):
        read_split_file(path)  # the item column is the dataset's


def test_legacy_json_is_converted_on_read(tmp_path):
    legacy = {"BIDMC": {"train": ["Case01", "Case00"], "valid": ["Case02"], "test": []}}
    path = tmp_path / "old.json"
    path.write_text(json.dumps(legacy))
    assert read_split_file(path, item_column="case_id") == [SplitRow("Case01", "BIDMC", "train"),
                                                            SplitRow("Case00", "BIDMC", "train"),
                                                            SplitRow("Case02", "BIDMC", "valid")]
    path.write_text(json.dumps(["Case00"]))
    with pytest.raises(ValueError, match=r"old.json is not a split of the form .*delete it to draw a new split"):
        read_split_file(path)


@pytest.mark.parametrize("lines,message", [
    (["a,A,train", "b,A,holdout"], r"line 3: unknown split 'holdout'"),
    (["a,A,train", "a,A,test"], r"line 3: 'a' of client 'A' is listed twice"),
])
def test_malformed_rows_name_the_line(tmp_path, lines, message):
    path = tmp_path / "s.csv"
    path.write_text("\n".join(["image_id,client,split", *lines]) + "\n")
    with pytest.raises(ValueError, match=message):
        read_split_file(path)


@pytest.mark.parametrize("expected,message", [
    ([("A", "a"), ("A", "b"), ("A", "c")], r"does not list image 'c' of client 'A'; .*delete it"),
    ([("A", "a"), ("B", "b")], r"puts image 'b' in client 'A', the data in 'B'; .*delete it"),
    ([("A", "a")], r"lists 1 image\(s\) not in the data \(e.g. 'b'\); .*delete it"),
])
def test_a_file_for_other_data_is_an_error(tmp_path, expected, message):
    rows = [SplitRow("a", "A", "train"), SplitRow("b", "A", "test")]
    with pytest.raises(ValueError, match=message):
        assign_splits(rows, expected, tmp_path / "s.csv")
