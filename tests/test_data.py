"""Data loading (kinetics.io.data): every bad-data case raises a DataError naming the file, the
row(s) and the fix; good data loads the same from a CSV file and from a DataFrame."""

import hashlib
import re
import warnings

import numpy as np
import pandas as pd
import pytest

from kinetics.io.data import NOISE_MODELS, Dataset, describe_rows, load_data
from kinetics.errors import DataError, KineticsWarning

GOOD = """time,observable,value,condition,sigma
0,plasma,100,control,5
1,plasma,60,control,5
2,plasma,35,control,5
0,plasma,100,knockdown,5
1,plasma,80,knockdown,5
2,plasma,64,knockdown,5
"""


def write(tmp_path, text, name="data.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error_of(source, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        load_data(source, **kwargs)
    return str(info.value)


def csv(*rows, header="time,observable,value"):
    return "\n".join([header, *rows]) + "\n"


# ----------------------------------------------------------------------------- good paths
def test_good_csv_loads_with_types_and_row_numbers(tmp_path):
    ds = load_data(write(tmp_path, GOOD))
    assert isinstance(ds, Dataset)
    assert list(ds.table.columns) == ["time", "observable", "value", "condition", "sigma", "row"]
    assert ds.n_points == 6
    assert ds.conditions == ["control", "knockdown"]
    assert ds.observables == ["plasma"]
    assert ds.has_sigma
    assert ds.table["row"].tolist() == [2, 3, 4, 5, 6, 7]          # header is row 1
    assert ds.table["time"].dtype == float and ds.table["value"].dtype == float
    assert ds.table["sigma"].tolist() == [5.0] * 6
    assert ds.dropped.empty and "reason" in ds.dropped.columns
    assert ds.path.endswith("data.csv")


def test_csv_and_dataframe_give_equal_tables(tmp_path):
    path = write(tmp_path, GOOD)
    from_file = load_data(path)
    from_frame = load_data(pd.read_csv(path))
    assert from_frame.path is None
    pd.testing.assert_frame_equal(from_file.table.drop(columns="row"), from_frame.table.drop(columns="row"))
    assert from_frame.table["row"].tolist() == [1, 2, 3, 4, 5, 6]   # DataFrame position + 1


def test_sha256_is_of_file_bytes_and_stable_for_dataframes(tmp_path):
    path = write(tmp_path, GOOD)
    assert load_data(path).sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    frame = pd.read_csv(path)
    first, second = load_data(frame).sha256, load_data(frame.copy()).sha256
    assert first == second and len(first) == 64
    changed = frame.copy()
    changed.loc[0, "value"] = 101
    assert load_data(changed).sha256 != first


def test_condition_defaults_and_single_named_condition(tmp_path):
    path = write(tmp_path, csv("0,plasma,1", "1,plasma,2"))
    assert load_data(path).conditions == ["default"]
    assert load_data(path, default_condition="ctrl").conditions == ["ctrl"]
    assert load_data(path, conditions=["control"]).conditions == ["control"]
    assert not load_data(path).has_sigma
    assert load_data(path).table["sigma"].isna().all()


def test_condition_values_stay_strings(tmp_path):
    path = write(tmp_path, csv("0,a,1,1", "0,a,2,2", "0,a,3,01", header="time,observable,value,condition"))
    assert load_data(path).conditions == ["1", "2", "01"]
    assert load_data(pd.DataFrame({"time": [0, 1], "observable": ["a", "a"], "value": [1.0, 2.0],
                                   "condition": [1, 2]})).conditions == ["1", "2"]


def test_replicates_and_unsorted_times_are_allowed(tmp_path):
    path = write(tmp_path, csv("2,a,5", "0,a,1", "1,a,3", "1,a,3.5", "0,a,1.2"))
    ds = load_data(path)
    assert ds.n_points == 5
    part = ds.for_condition("default")
    assert part["time"].tolist() == [0, 0, 1, 1, 2]
    assert part["row"].tolist() == [3, 6, 4, 5, 2]                   # stable: replicates keep file order
    assert ds.table["row"].tolist() == [2, 3, 4, 5, 6]               # table keeps the file's order


def test_whitespace_around_names_and_headers_is_stripped(tmp_path):
    path = write(tmp_path, " time , observable ,value,condition\n0,  plasma ,1, control \n")
    ds = load_data(path, observables=["plasma"], conditions=["control", "other"])
    assert ds.observables == ["plasma"] and ds.conditions == ["control"]


def test_blank_lines_are_skipped_and_row_numbers_stay_line_numbers(tmp_path):
    path = write(tmp_path, csv("0,a,1", "", "1,a,x"))
    assert "row 4 ('x')" in error_of(path)


def test_drop_missing_drops_and_reports(tmp_path):
    path = write(tmp_path, csv("0,a,1", "1,a,", "2,a,NA", "3,a,4"))
    with pytest.warns(KineticsWarning, match=r"dropped 2 row\(s\).*rows 3, 4"):
        ds = load_data(path, drop_missing=True)
    assert ds.n_points == 2
    assert ds.dropped["row"].tolist() == [3, 4]
    assert ds.dropped["reason"].tolist() == ["missing value (empty cell)", "missing value ('NA')"]
    assert "dropped 2 row(s)" in ds.summary()


def test_no_warning_when_nothing_is_dropped(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = load_data(write(tmp_path, GOOD), drop_missing=True)
    assert ds.dropped.empty


def test_drop_missing_does_not_drop_infinite_or_text_values(tmp_path):
    message = error_of(write(tmp_path, csv("0,a,inf", "1,a,abc")), drop_missing=True)
    assert "row 2" in message and "infinite value" in message
    assert "row 3 ('abc')" in message


def test_summary_lists_points_per_condition_and_observable(tmp_path):
    text = load_data(write(tmp_path, GOOD)).summary()
    assert "6 points" in text and "time 0 to 2" in text
    assert re.search(r"control\s+plasma\s+3", text) and re.search(r"knockdown\s+plasma\s+3", text)


def test_combined_noise_accepts_zero_values(tmp_path):
    ds = load_data(write(tmp_path, csv("0,a,0", "1,a,2")), noise="combined")
    assert ds.n_points == 2


def test_noise_data_with_sigma_column(tmp_path):
    assert load_data(write(tmp_path, GOOD), noise="data").has_sigma
    assert NOISE_MODELS == ("constant", "proportional", "combined", "data")


def test_describe_rows_limits_the_list():
    assert describe_rows([3]) == "row 3"
    assert describe_rows([3, 5], ["x", "y"]) == "rows 3 ('x'), 5 ('y')"
    assert describe_rows(range(1, 16)) == "rows 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 and 5 more"


# ----------------------------------------------------------------------------- the file itself
def test_missing_file(tmp_path):
    message = error_of(tmp_path / "nope.csv")
    assert "nope.csv" in message and "not found" in message and "check the file name" in message


def test_folder_instead_of_file(tmp_path):
    message = error_of(tmp_path)
    assert str(tmp_path) in message and "folder" in message and "path of the CSV file" in message


def test_empty_file(tmp_path):
    message = error_of(write(tmp_path, "  \n"))
    assert "data.csv" in message and "empty" in message and "header row 'time,observable,value'" in message


def test_header_without_rows(tmp_path):
    message = error_of(write(tmp_path, "time,observable,value\n"))
    assert "data.csv" in message and "no data rows" in message and "add one row per measurement" in message


def test_binary_file(tmp_path):
    path = tmp_path / "data.xlsx"
    path.write_bytes(b"PK\x03\x04\x00\x00binary")
    message = error_of(path)
    assert "data.xlsx" in message and "CSV UTF-8" in message


def test_not_utf8(tmp_path):
    path = tmp_path / "data.csv"
    path.write_bytes(b"time,observable,value\n0,\xb5g,1\n")
    message = error_of(path)
    assert "data.csv" in message and "row 2" in message and "save the file as 'CSV UTF-8'" in message


def test_semicolon_separated(tmp_path):
    message = error_of(write(tmp_path, "time;observable;value\n0;a;1\n"))
    assert "data.csv" in message and "row 1 (header)" in message and "';'" in message
    assert "comma-separated" in message


def test_wrong_number_of_fields(tmp_path):
    message = error_of(write(tmp_path, csv("0,a,1", "1,a,1,5", "2,a")))
    assert "data.csv" in message and "wrong number of fields in rows 3 ('4 fields'), 4 ('2 fields')" in message
    assert "the header (row 1) has 3" in message and "quote values that contain a comma" in message


def test_unclosed_quote(tmp_path):
    message = error_of(write(tmp_path, csv("0,a,1", '1,"a,2', "2,a,3")))
    assert "data.csv" in message and "row 3 ('2 fields')" in message and "close any open quote" in message


def test_bad_source_type():
    with pytest.raises(DataError, match="CSV file or a pandas DataFrame"):
        load_data(42)


# ----------------------------------------------------------------------------- columns
@pytest.mark.parametrize("bad, good", [("Time", "time"), ("obs", "observable"), ("val", "value"),
                                       ("values", "value"), ("TIME", "time"), ("sd", "sigma"),
                                       ("Condition", "condition")])
def test_misspelled_column_is_suggested(tmp_path, bad, good):
    columns = {"time": "time", "observable": "observable", "value": "value"}
    header = ",".join(bad if c == good else c for c in columns)
    if good in ("sigma", "condition"):
        header += "," + bad
    message = error_of(write(tmp_path, header + "\n" + "0,a,1" + (",1" if good in ("sigma", "condition") else "") + "\n"))
    assert "data.csv" in message and "row 1 (header)" in message
    assert f"'{bad}' (did you mean '{good}'?)" in message
    assert "Allowed columns: time, observable, value (required); condition, sigma (optional)" in message


def test_missing_required_column_without_hint(tmp_path):
    message = error_of(write(tmp_path, "time,observable\n0,a\n"))
    assert "data.csv" in message and "row 1 (header)" in message
    assert "missing required column 'value'" in message and "add it" in message


def test_unknown_extra_column(tmp_path):
    message = error_of(write(tmp_path, "time,observable,value,batch\n0,a,1,x\n"))
    assert "unknown column 'batch'" in message and "row 1 (header)" in message
    assert "delete columns the fit does not use" in message and "condition, sigma (optional)" in message


def test_duplicate_and_unnamed_columns(tmp_path):
    message = error_of(write(tmp_path, ",time,observable,value,time\n0,0,a,1,0\n"))
    assert "column 1 has no name" in message and "index=False" in message
    assert "column 'time' appears twice (columns 2 and 5)" in message


def test_dataframe_column_errors_name_the_dataframe():
    message = error_of(pd.DataFrame({"Time": [0.0], "observable": ["a"], "value": [1.0]}))
    assert message.startswith("DataFrame: ") and "did you mean 'time'" in message


# ----------------------------------------------------------------------------- cells
def test_non_numeric_time_value_and_sigma(tmp_path):
    path = write(tmp_path, csv("0,a,1,0.1", "1 h,a,2,0.1", "2,a,1,5,0.1", "3,a,3,big",
                               header="time,observable,value,sigma").replace("1,5", '"1,5"'))
    message = error_of(path)
    assert message.startswith(f"{path}: 3 problems")
    assert "non-numeric time in row 3 ('1 h')" in message and "plain numbers" in message
    assert "non-numeric value in row 4 ('1,5')" in message and "'.' as the decimal point" in message
    assert "non-numeric sigma in row 5 ('big')" in message


def test_missing_values_are_an_error_without_drop_missing(tmp_path):
    message = error_of(write(tmp_path, csv("0,a,1", "1,a,", "2,a,nan")))
    assert "data.csv" in message and "missing value in rows 3, 4 ('nan')" in message
    assert "drop_missing=True" in message


def test_missing_time_is_never_dropped(tmp_path):
    message = error_of(write(tmp_path, csv("0,a,1", ",a,2")), drop_missing=True)
    assert "missing time in row 3" in message and "fill in when each measurement was taken" in message


def test_infinite_values(tmp_path):
    message = error_of(write(tmp_path, csv("0,a,1", "1,a,inf", "inf,a,2")))
    assert "infinite value in row 3 ('inf')" in message and "infinite time in row 4" in message
    assert "finite number" in message


def test_many_bad_rows_are_listed_up_to_ten(tmp_path):
    path = write(tmp_path, csv(*[f"{i},a,x{i}" for i in range(15)]))
    message = error_of(path)
    assert "rows 2 ('x0'), 3 ('x1')" in message and "11 ('x9') and 5 more" in message
    assert "12 ('x10')" not in message


def test_negative_time(tmp_path):
    message = error_of(write(tmp_path, csv("0,a,1", "-0.5,a,2")))
    assert "data.csv" in message and "negative time in row 3 ('-0.5')" in message
    assert "shift the times" in message


def test_empty_observable(tmp_path):
    message = error_of(write(tmp_path, csv("0,a,1", "1,  ,2")))
    assert "data.csv" in message and "empty observable name in row 3" in message
    assert "write which observable" in message


def test_empty_condition(tmp_path):
    message = error_of(write(tmp_path, csv("0,a,1,ctl", "1,a,2,", header="time,observable,value,condition")))
    assert "empty condition in row 3" in message and "name every row's condition" in message


def test_unknown_observable_with_suggestion(tmp_path):
    path = write(tmp_path, csv("0,plasma,1", "1,Plasma_conc,2", "2,plasma,3", "3,plasma_conc,4"))
    message = error_of(path, observables=["plasma_conc", "EE"])
    assert "data.csv" in message
    assert "unknown observable 'plasma' in rows 2, 4 (did you mean 'plasma_conc'?)" in message
    assert "unknown observable 'Plasma_conc' in row 3 (did you mean 'plasma_conc'?)" in message
    assert "add it to the model" in message


def test_unknown_condition_with_suggestion(tmp_path):
    path = write(tmp_path, csv("0,a,1,control", "0,a,2,knockdwn", header="time,observable,value,condition"))
    message = error_of(path, conditions=["control", "knockdown"])
    assert "unknown condition 'knockdwn' in row 3 (did you mean 'knockdown'?)" in message
    assert "[conditions.knockdwn]" in message


def test_several_conditions_but_no_condition_column(tmp_path):
    message = error_of(write(tmp_path, csv("0,a,1")), conditions=["control", "knockdown"])
    assert "data.csv" in message and "row 1 (header)" in message
    assert "no 'condition' column" in message and "add a 'condition' column" in message


def test_non_positive_and_missing_sigma(tmp_path):
    path = write(tmp_path, csv("0,a,1,0", "1,a,2,-1", "2,a,3,", "3,a,4,0.5", header="time,observable,value,sigma"))
    message = error_of(path)
    assert "non-positive sigma in rows 2 ('0'), 3 ('-1')" in message and "must be > 0" in message
    assert "missing sigma in row 4" in message and "delete the sigma column" in message


def test_noise_data_needs_a_sigma_column(tmp_path):
    message = error_of(write(tmp_path, csv("0,a,1")), noise="data")
    assert "data.csv" in message and "row 1 (header)" in message
    assert "needs a 'sigma' column" in message and "add a 'sigma' column" in message


def test_proportional_noise_rejects_non_positive_values(tmp_path):
    message = error_of(write(tmp_path, csv("0,a,0", "1,a,2", "2,a,-1")), noise="proportional")
    assert "data.csv" in message and "value <= 0 in rows 2 ('0'), 4 ('-1')" in message
    assert 'noise = "combined"' in message


def test_unknown_noise_model(tmp_path):
    message = error_of(write(tmp_path, GOOD), noise="proportinal")
    assert "did you mean 'proportional'" in message


def test_all_kinds_of_problem_are_reported_together(tmp_path):
    message = error_of(write(tmp_path, csv("x,a,1", "-1,,y")))
    assert "4 problems" in message
    assert "non-numeric time in row 2" in message and "negative time in row 3" in message
    assert "non-numeric value in row 3" in message and "empty observable name in row 3" in message


def test_dataframe_errors_name_dataframe_rows():
    frame = pd.DataFrame({"time": [0.0, 1.0, np.nan], "observable": ["a", "a", "a"],
                          "value": [1.0, np.inf, 2.0]})
    message = error_of(frame)
    assert message.startswith("DataFrame: ")
    assert "infinite value in row 2" in message and "missing time in row 3" in message


def test_dataframe_with_text_cells_and_booleans():
    frame = pd.DataFrame({"time": ["0", "1.5", True], "observable": ["a", "a", "a"], "value": [" 1 ", "2", "3"]})
    message = error_of(frame)
    assert "non-numeric time in row 3 ('True')" in message


def test_for_condition_unknown_name(tmp_path):
    ds = load_data(write(tmp_path, GOOD))
    with pytest.raises(DataError, match=r"no rows for condition 'Control' \(did you mean 'control'\?\)"):
        ds.for_condition("Control")
