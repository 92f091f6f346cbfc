"""`evaluate --groups`: false alarms and detection per age band, gender and ethnicity (realitycheck.analysis.groups)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from realitycheck.analysis import groups as G
from realitycheck.analysis.metrics import wilson_interval


def _utk(i: int, age: int, gender: int, race: int) -> str:
    return f"/data/utk_{age}_{gender}_{race}_2017011{i:07d}.jpg.chip.jpg"


def test_known_file_names():
    assert G.from_name("utk_100_1_2_20170112222336458.jpg.chip.jpg") == {
        "age band": "60+", "gender": "female", "ethnicity": "Asian"}
    assert G.from_name("x/10_0_4_20170110221714752.jpg") == {"age band": "0-12", "gender": "male", "ethnicity": "Others"}
    assert G.from_name("aaf_07380A80.jpg") == {"age band": "60+", "gender": "female"}  # last female serial
    assert G.from_name("aaf_07381A15.jpg") == {"age band": "13-19", "gender": "male"}
    assert G.from_name("00002A02.jpg") == {"age band": "0-12", "gender": "female"}
    assert G.from_name("SDXL_image_0001033.jpg") == {} and G.from_name("london_013_03.jpg") == {}


def test_hand_counted_table_and_flag():
    # 20 real photos: 4 aged 60+ (2 women, 2 men), all called fake; 16 aged 20-39 (8 and 8), none called fake
    paths = ([_utk(i, 70, i % 2, 0) for i in range(4)] + [_utk(10 + i, 30, i % 2, 1) for i in range(16)])
    p_fake = [0.9] * 4 + [0.1] * 16
    table = pd.DataFrame({"path": paths, "true_label": "real", "p_fake": p_fake, "error": ""})
    rows = G.group_rates(table, G.attributes_for(paths), threshold=0.5)
    r = rows.set_index(["attribute", "group"])
    assert list(r.loc[("age band", "60+"), ["n", "called_fake"]]) == [4, 4]
    assert list(r.loc[("age band", "20-39"), ["n", "called_fake"]]) == [16, 0]
    assert r.loc[("age band", "60+"), "overall_rate"] == pytest.approx(4 / 20)
    # Wilson(4, 4) = 0.510-1.000: wholly above the overall 20% -> flagged; Wilson(0, 16) = 0-0.194: not
    assert r.loc[("age band", "60+"), "ci95_low"] == pytest.approx(0.5101, abs=1e-4)
    assert r.loc[("age band", "60+"), "flag"] == "more false alarms than overall"
    assert r.loc[("age band", "20-39"), "flag"] == ""
    assert list(r.loc[("gender", "female"), ["n", "called_fake"]]) == [10, 2]  # 2 of the 60+ and 8 of the 20-39
    assert list(r.loc[("gender", "male"), ["n", "called_fake"]]) == [10, 2]
    assert (r.loc[[("gender", "female"), ("gender", "male")], "flag"] == "").all()
    assert list(r.loc[("ethnicity", "White"), ["n", "called_fake"]]) == [4, 4]
    assert list(rows["attribute"].unique()) == ["age band", "gender", "ethnicity"]
    assert list(rows[rows["attribute"] == "age band"]["group"]) == ["20-39", "60+"]
    assert "<- MORE FALSE ALARMS THAN OVERALL" in G.format_table(rows)
    # the same photos at a threshold that calls none fake: nothing is flagged
    assert (G.group_rates(table, G.attributes_for(paths), threshold=0.95)["flag"] == "").all()


def test_detection_flag_from_a_csv(tmp_path):
    (tmp_path / "fake").mkdir()
    paths = [str(tmp_path / "fake" / f"f{i}.jpg") for i in range(10)]
    csv = tmp_path / "groups.csv"
    csv.write_text("path,attribute,value\n" + "".join(
        f"fake/f{i}.jpg,lighting,{'dim' if i < 5 else 'bright'}\n" for i in range(10)))
    table = pd.DataFrame({"path": paths, "true_label": "fake", "p_fake": [0.2] * 5 + [0.8] * 5, "error": ""})
    rows = G.group_rates(table, G.attributes_for(paths, csv), threshold=0.5).set_index("group")
    assert rows.loc["dim", "rate"] == 0.0 and rows.loc["bright", "rate"] == 1.0
    assert rows.loc["dim", "ci95_high"] == pytest.approx(wilson_interval(0, 5)[1])  # 0.434 < overall 50%
    assert rows.loc["dim", "flag"] == "fewer detected than overall" and rows.loc["bright", "flag"] == ""
    assert rows.loc["dim", "rate_name"] == "detection rate"


def test_failed_images_are_left_out():
    paths = [_utk(1, 30, 0, 0), _utk(2, 30, 0, 0)]
    table = pd.DataFrame({"path": paths, "true_label": "real", "p_fake": [0.1, None], "error": ["", "broken"]})
    rows = G.group_rates(table, G.attributes_for(paths), threshold=0.5)
    assert rows.set_index("attribute").loc["gender", "n"] == 1


@pytest.mark.parametrize("text,message", [
    ("file,attribute,value\nx.jpg,age,30\n", "needs columns path,attribute,value; missing path"),
    ("path,attribute\nx.jpg,age\n", "missing value"),
    ("path,attribute,value\nx.jpg,,30\n", "line 2: missing attribute"),
    ("path,attribute,value\nx.jpg,gender,\n", "line 2: missing value"),
    ("path,attribute,value\nx.jpg,gender,female\nx.jpg,gender,male\n", "two values of 'gender'"),
    ("path,attribute,value\n", "has no rows"),
])
def test_bad_csv_is_a_clear_error(tmp_path, text, message):
    csv = tmp_path / "g.csv"
    csv.write_text(text)
    with pytest.raises(G.GroupError, match=message.replace("(", r"\(").replace(")", r"\)")):
        G.attributes_for([str(tmp_path / "x.jpg")], csv)


def test_unknown_attribute_and_unmatched_csv(tmp_path):
    paths = [_utk(1, 30, 0, 0)]
    table = pd.DataFrame({"path": paths, "true_label": "real", "p_fake": [0.1], "error": ""})
    with pytest.raises(G.GroupError, match="unknown attribute 'skin tone': the evaluated images have age band, gender, ethnicity"):
        G.group_rates(table, G.attributes_for(paths), 0.5, only=["skin tone"])
    csv = tmp_path / "g.csv"
    csv.write_text("path,attribute,value\nother.jpg,gender,female\n")
    with pytest.raises(G.GroupError, match="none of its 1 files is among the evaluated images"):
        G.attributes_for(paths, csv)


@pytest.fixture
def tiny_folder(tmp_path, sample_face):
    """Real photos under UTKFace / All-Age-Faces names (the same portrait resized, so all decode)."""
    from PIL import Image

    img = Image.open(sample_face).convert("RGB")
    names = {"real": ["utk_70_1_0_20170101000000001.jpg", "utk_72_0_1_20170101000000002.jpg",
                      "utk_25_1_1_20170101000000003.jpg", "aaf_00010A30.jpg", "aaf_09000A65.jpg"],
             "fake": ["f1.jpg", "f2.jpg"]}
    for label, files in names.items():
        (tmp_path / label).mkdir()
        for i, n in enumerate(files):
            img.resize((120 + 4 * i, 140 + 4 * i)).save(tmp_path / label / n)
    return tmp_path


def test_cli_evaluate_groups(tiny_folder, tiny_checkpoint, tmp_path):
    from tests.helpers import run_cli_here as run_cli

    out = run_cli("evaluate", str(tiny_folder), "--weights", str(tiny_checkpoint), "--groups", "--json",
                  "--csv", str(tmp_path / "t.csv"), "--report", str(tmp_path / "r.html"))
    assert out.returncode == 0, out.stderr
    rows = pd.DataFrame(json.loads(out.stdout)["groups"]).set_index(["attribute", "group"])
    # hand count: ages 70, 72, 25, 30, 65 -> 60+: 3, 20-39: 2; women: utk 70 and 25, aaf serial 10 -> 3; men 2
    assert rows.loc[("age band", "60+"), "n"] == 3 and rows.loc[("age band", "20-39"), "n"] == 2
    assert rows.loc[("gender", "female"), "n"] == 3 and rows.loc[("gender", "male"), "n"] == 2
    assert rows.loc[("ethnicity", "White"), "n"] == 1 and rows.loc[("ethnicity", "Black"), "n"] == 2
    assert set(rows["label"]) == {"real"}  # the fakes' names carry no attribute
    table = pd.read_csv(tmp_path / "t.csv", keep_default_na=False)
    from realitycheck.model.inference import load_classifier

    again = G.group_rates(table, G.attributes_for(table["path"]), load_classifier(tiny_checkpoint).threshold)
    assert list(again["called_fake"]) == list(rows["called_fake"])
    html = (tmp_path / "r.html").read_text()
    assert "Per group of people" in html and "60+" in html
    text = run_cli("evaluate", str(tiny_folder), "--weights", str(tiny_checkpoint), "--groups", "--group-by", "gender")
    assert "per group" in text.stdout and "gender     female" in text.stdout and "age band" not in text.stdout
    bad = run_cli("evaluate", str(tiny_folder), "--weights", str(tiny_checkpoint), "--groups", "--group-by", "height")
    assert bad.returncode == 2 and "unknown attribute 'height'" in bad.stderr and "Traceback" not in bad.stderr
    csv = tmp_path / "g.csv"
    csv.write_text("path,attribute,value\nreal/aaf_00010A30.jpg,skin tone,\n")
    bad = run_cli("evaluate", str(tiny_folder), "--weights", str(tiny_checkpoint), "--groups", str(csv))
    assert bad.returncode == 2 and "line 2: missing value" in bad.stderr and "Traceback" not in bad.stderr
