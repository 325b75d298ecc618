"""k-fold cross-validation: one run dir per fold, and the folds' evaluations summarised from MLflow."""

import json

import pytest

from cluster.prepare import SPLIT_FILE, check_split
from data.errors import InputError
from data.folders import KFold


def test_a_run_dir_keeps_the_split_its_manifest_was_made_for(tmp_path):
    check_split(tmp_path, KFold(5, 1))  # nothing prepared yet: any split
    (tmp_path / "manifest.jsonl").write_text("")
    check_split(tmp_path, None)  # prepared before split.json: val_fraction's
    with pytest.raises(InputError, match=r"prepared for data.split null, but the config has \{folds: 5, fold: 1\}"):
        check_split(tmp_path, KFold(5, 1))
    (tmp_path / SPLIT_FILE).write_text(json.dumps({"split": {"folds": 5, "fold": 0}}))
    check_split(tmp_path, KFold(5, 0))
    with pytest.raises(InputError, match=r"\{folds: 5, fold: 0\}, but the config has \{folds: 5, fold: 1\}; give each "
                                         r"fold its own run_dir"):
        check_split(tmp_path, KFold(5, 1))
