"""Weight averaging of LoRA fine-tunes (training.guard.soup) on a tiny random encoder: members that
differ only in train_seed share data and split, the soup's merged encoder is the mean of theirs, its
heads are their mean, it is calibrated and measured on their split and loads through a backend; members
that cannot be averaged are refused."""

from __future__ import annotations

import copy
import json
import pytest
import torch

from tests.unit.test_guard_finetune import _ft_cfg, setup  # noqa: F401  (module fixture, shared recipe)
from models.backends import GuardInput
from training.guard import finetune, soup


@pytest.fixture(scope="module")
def members(setup):  # noqa: F811
    root, common = setup
    out = []
    for ts in (0, 1):
        cfg = _ft_cfg(root, common, output_dir=root / f"member{ts}", train_seed=ts, epochs=2)
        finetune.run(cfg, [])
        out.append(root / f"member{ts}")
    return root, common, out


def _merged_linear_weights(model) -> dict[str, torch.Tensor]:
    merged = copy.deepcopy(model.encoder).merge_and_unload()
    return {k: v for k, v in merged.state_dict().items() if k.endswith("weight")}


def test_train_seed_changes_noise_not_data_or_split(members):
    _, _, dirs = members
    cards = [json.loads((d / "card.json").read_text()) for d in dirs]
    assert [c["train_seed"] for c in cards] == [0, 1] and {c["seed"] for c in cards} == {0}
    assert cards[0]["data"] == cards[1]["data"]
    split = [c["metrics"]["split"] for c in cards]
    assert all(s[k] == split[0][k] for s in split for k in ("train", "calibration", "measured"))
    from safetensors.torch import load_file

    a, b = (load_file(str(d / "head.safetensors")) for d in dirs)
    assert any(not torch.equal(a[k], b[k]) for k in a if "lora_A" in k)  # another adapter init


def test_soup_is_the_mean_of_the_members(members):
    from models.classifier import GuardClassifier

    _, _, dirs = members
    models = [GuardClassifier.load(d) for d in dirs]
    s = soup.build_soup(models)
    assert s.config.lora_r == 2 * models[0].config.lora_r
    want = [_merged_linear_weights(m) for m in models]
    got = _merged_linear_weights(s)
    lora_touched = 0
    for k, v in got.items():
        mean = (want[0][k] + want[1][k]) / 2
        assert torch.allclose(v, mean, atol=1e-6), k
        lora_touched += not torch.allclose(want[0][k], want[1][k])
    assert lora_touched  # the members' deltas really differ, so the check above can fail
    assert torch.allclose(s.out.weight, (models[0].out.weight + models[1].out.weight) / 2)
    x = s.featurize([GuardInput("tell me about bomb now")])
    with torch.no_grad():
        z = s(**x)["prompt"]
        zs = [m(**m.featurize([GuardInput("tell me about bomb now")]))["prompt"] for m in models]
    assert torch.isfinite(z).all() and not torch.allclose(z, zs[0])


def test_run_writes_a_calibrated_artifact_beside_its_members(members, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    root, _, dirs = members
    out = root / "soup"
    report = soup.run([str(d) for d in dirs], str(out), 2, [])
    m0 = json.loads((dirs[0] / "card.json").read_text())
    assert report["split"]["measured"] == m0["metrics"]["split"]["measured"]
    arms = report["arms"]
    assert set(arms) == {"soup", "frozen_baseline", "member_train_seed_0", "member_train_seed_1"}
    n = report["split"]["measured"]
    assert arms["soup"]["prompt"]["n"] + arms["soup"]["response"]["n"] == n
    card = json.loads((out / "card.json").read_text())
    assert [m["train_seed"] for m in card["soup"]["members"]] == [0, 1]
    assert card["config"]["lora_r"] == 2 * m0["config"]["lora_r"]
    from models.backends import load_backend

    backend = load_backend("torch", out, device="cpu")
    v_bad, v_good = backend.score([GuardInput("tell me about bomb now"), GuardInput("tell me about bread now")])
    assert v_bad.unsafe_prob > v_good.unsafe_prob


def test_members_that_cannot_be_averaged_are_refused(members, tmp_path):
    root, common, dirs = members
    with pytest.raises(ValueError, match="at least two"):
        soup.member_recipe([dirs[0]])
    with pytest.raises(ValueError, match="repeat a train_seed"):
        soup.member_recipe([dirs[0], dirs[0]])
    other = tmp_path / "other"
    other.mkdir()
    card = json.loads((dirs[1] / "card.json").read_text())
    card["config"]["encoder_learning_rate"] = 0.5
    (other / "card.json").write_text(json.dumps(card))
    with pytest.raises(ValueError, match="encoder_learning_rate"):
        soup.member_recipe([dirs[0], other])
    frozen = root / "base"
    with pytest.raises(ValueError, match="not a training.guard.finetune artifact"):
        soup.member_recipe([frozen, dirs[0]])
    assert soup.main(["--members", str(dirs[0]), "--output_dir", str(tmp_path / "x")]) == 2
    from service import cli  # the same job as `spaguard soup-guard`

    assert cli.main(["soup-guard", "--members", str(dirs[0]), "--output_dir", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()


def test_average_state_refuses_mismatched_weights():
    a = {"trunk.0.weight": torch.zeros(2, 2)}
    with pytest.raises(ValueError, match="different weights"):
        soup.average_state([a, {"trunk.0.weight": torch.zeros(3, 2)}])
    with pytest.raises(ValueError, match="average"):
        soup.average_state([{"encoder.x.weight": torch.zeros(1)}] * 2)
