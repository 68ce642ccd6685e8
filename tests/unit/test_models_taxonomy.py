"""Taxonomy integrity: counts, keys, reachability, projections, data-driven leaves."""

from __future__ import annotations

import json

import pytest

from models.taxonomy import DATA_FILE, Taxonomy, default_node_keys, default_taxonomy, node_keys_version

PUBLISHED_CATEGORIES = {
    "Toxic", "Unfair", "Erosion of Trust in Public Information", "False Beliefs", "Dangerous Information",
    "Privacy", "Security Threats", "Defamation", "Fraud or Deceptive Action", "Influence Operations",
    "Illegal Activities", "Persuasion and Manipulation", "Violation of Personal Property",
    "Risky Financial Practices", "Trade and Compliance",
}


def test_counts_and_published_names() -> None:
    tax = default_taxonomy()
    assert len(tax.keys("domain")) == 6
    assert len(tax.keys("category")) == 15
    assert 0 < len(tax.keys("subcategory")) <= 53  # only verified leaves ship; the rest come from data
    assert {tax.nodes[k].display for k in tax.keys("category")} == PUBLISHED_CATEGORIES


def test_raw_strings_are_keys_with_typos_kept() -> None:
    tax = default_taxonomy()
    key = "Representation & ToxicityHarms/Unfair/disablity discrimination"
    assert key in tax.nodes
    assert tax.nodes[key].display == "Disability discrimination"
    assert tax.display(key) == "Representation & Toxicity Harms > Unfair > Disability discrimination"


def test_keys_unique_and_every_node_reachable_from_a_domain() -> None:
    tax = default_taxonomy()
    keys = tax.keys()
    assert len(keys) == len(set(keys))
    domains = set(tax.keys("domain"))
    for key in keys:
        chain = tax.ancestors(key)
        assert (chain[-1] if chain else key) in domains
        assert len(chain) == ("domain", "category", "subcategory").index(tax.nodes[key].level)
        if tax.nodes[key].parent:
            assert key in tax.children(tax.nodes[key].parent)


def test_projections_point_to_known_nodes_and_targets() -> None:
    tax = default_taxonomy()
    assert len(tax.target_names("openai")) == 13
    assert tax.target_names("mlcommons") == [f"S{i}" for i in range(1, 15)]
    for target in ("openai", "mlcommons"):
        allowed = set(tax.target_names(target))
        for key, names in tax.projections[target].items():
            assert key in tax.nodes
            assert set(names) <= allowed


def test_bad_projection_is_refused(tmp_path) -> None:
    data = json.loads(DATA_FILE.read_text())
    data["projections"]["openai"]["Malicious Use/Nonexistent"] = ["illicit"]
    bad = tmp_path / "tax.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="unknown node"):
        Taxonomy.load(bad)
    data = json.loads(DATA_FILE.read_text())
    data["projections"]["mlcommons"]["Malicious Use"] = ["S99"]
    bad.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="unknown targets"):
        Taxonomy.load(bad)


def test_project_takes_the_max_over_mapped_nodes() -> None:
    tax = default_taxonomy()
    scores = {"Malicious Use/Security threats/weapon": 0.8, "Malicious Use/Illegal activities": 0.3,
              "Representation & ToxicityHarms/Unfair": 0.6}
    openai = tax.project(scores, "openai")
    assert openai["illicit/violent"] == 0.8 and openai["illicit"] == 0.3 and openai["hate"] == 0.6
    assert openai["sexual"] == 0.0
    assert tax.project(scores, "mlcommons")["S9"] == 0.8
    with pytest.raises(ValueError):
        tax.project(scores, "nope")


def test_resolve_is_case_and_space_insensitive() -> None:
    tax = default_taxonomy()
    assert tax.resolve("malicious use", "SECURITY THREATS", "weapon") == "Malicious Use/Security threats/weapon"
    assert tax.resolve("Misinformation harms", "false beliefs") == "Misinformation Harms/False Beliefs"
    assert tax.resolve("Unknown domain") is None
    labels = tax.labels_for("Malicious Use", "Security threats", "weapon")
    assert labels == ["Malicious Use/Security threats/weapon", "Malicious Use/Security threats", "Malicious Use"]


def test_from_rows_adds_unknown_leaves_only() -> None:
    base = default_taxonomy()
    rows = [
        {"class1": "Malicious Use", "class2": "Security threats", "class3": "weapon"},  # known
        {"class1": "Misinformation Harms", "class2": "False beliefs", "class3": "new leaf"},  # matches by case
        {"image": "Socioeconomic Harms/Trade and Compliance/other leaf/12.jpg"},  # image path form
        {"class1": "Brand New Domain", "class2": "Cat", "class3": "Leaf"},
        {"question": "no classes here"},
    ]
    tax = Taxonomy.from_rows(rows)
    added = [k for k in tax.keys() if k not in base.nodes]
    assert added == ["Misinformation Harms/False Beliefs/new leaf",
                     "Socioeconomic Harms/Trade and Compliance/other leaf",
                     "Brand New Domain", "Brand New Domain/Cat", "Brand New Domain/Cat/Leaf"]
    assert all(tax.nodes[k].source == "data" for k in added)
    assert tax.version != base.version and base.version == default_taxonomy().version
    with pytest.raises(ValueError, match="no class2"):
        base.extend_from_rows([{"class1": "A", "class3": "C"}])


def test_version_fingerprints_node_keys() -> None:
    keys = default_node_keys()
    assert node_keys_version(keys) == default_taxonomy().version
    assert node_keys_version(keys[::-1]) != node_keys_version(keys)
