"""Every claims.yaml entry links its own paper (issue 18): no entry without a url, none to
Wikipedia, none borrowing a method's url, and where an entry and its one method's spec cite the
same arXiv paper they agree on url and first author."""
import re

import pytest
import yaml

from lossbench import methods
from lossbench.report import claims

ENTRIES = claims.load_claims()
ARXIV = re.compile(r"arxiv\.org/abs/(\d{4}\.\d{4,5})")


def _arxiv_id(url: str | None) -> str | None:
    m = ARXIV.search(url or "")
    return m.group(1) if m else None


def _first_author(paper: str) -> str:
    return re.split(r"[\s,&(]", paper.strip(), maxsplit=1)[0].lower()


def _spec(name: str):
    try:
        return methods.get(name)
    except KeyError:  # optimizers and kernels have no method spec
        return None


def _id(entry) -> str:
    return entry["paper"][:60]


@pytest.mark.parametrize("entry", ENTRIES, ids=_id)
def test_entry_has_its_own_paper_url(entry):
    url = entry.get("url")
    assert isinstance(url, str) and url.startswith("https://"), entry["paper"]
    assert "wikipedia.org" not in url


@pytest.mark.parametrize("entry", [e for e in ENTRIES if len(e["methods"]) == 1], ids=_id)
def test_entry_agrees_with_its_method_spec_on_the_same_paper(entry):
    spec = _spec(entry["methods"][0])
    spec_id = _arxiv_id(spec.url) if spec else None
    if spec_id is None:
        pytest.skip("no method spec with an arXiv url")
    entry_id = _arxiv_id(entry["url"])
    text = " ".join(str(entry.get(k, "")) for k in ("paper", "claim", "source"))
    same_author = _first_author(entry["paper"]) == _first_author(spec.paper)
    if spec_id in text or same_author:  # the entry is about the spec's paper
        assert entry_id == spec_id, (entry["paper"], entry["url"], spec.url)
    if entry_id == spec_id:  # same paper: the same authors are credited
        assert same_author, (entry["paper"], spec.paper)


def test_ln_dpo_credits_the_papers_authors():
    """arXiv 2407.15229 (The Hitchhiker's Guide to Human Alignment with *PO) is by Ahrabian et al."""
    entry = next(e for e in ENTRIES if e["methods"] == ["ln_dpo"])
    assert entry["url"] == "https://arxiv.org/abs/2407.15229"
    assert entry["paper"].startswith("Ahrabian et al.") and methods.get("ln_dpo").paper.startswith("Ahrabian et al.")


def test_entries_not_about_their_methods_paper_link_their_own():
    by_paper = {e["paper"].split(" — ")[0]: e["url"] for e in ENTRIES}
    assert by_paper["Yan, Miao et al., ICLR 2025"] == "https://arxiv.org/abs/2406.07327"
    assert by_paper["Chen, Malladi et al., NeurIPS 2024"] == "https://arxiv.org/abs/2405.19534"
    grok = [e for e in ENTRIES if "Grokking at the Edge" in e["paper"]]
    assert grok and {e["url"] for e in grok} == {"https://arxiv.org/abs/2501.04697"}


@pytest.mark.parametrize("url", [None, "", "not a url"])
def test_an_entry_without_its_own_url_is_refused(tmp_path, url):
    entry = {"paper": "Someone et al., 2024 — X", "methods": ["dpo"], "claim": "c",
             "test": {"datasets": ["d"], "metric": "m", "baseline": "erm", "direction": "higher"}}
    if url is not None:
        entry["url"] = url
    path = tmp_path / "claims.yaml"
    path.write_text(yaml.safe_dump({"claims": [entry]}))
    with pytest.raises(ValueError, match="no url of its own"):
        claims.load_claims(path)
    with pytest.raises(ValueError, match="no url of its own"):
        claims.evaluate([entry], None, 0.95, {})
