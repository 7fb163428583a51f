"""docs/methods/: the generated parts of the method pages and the index match the method specs."""
from lossbench import method_docs


def test_every_method_has_a_page_with_status_and_generated_block():
    for slug, names in method_docs.pages().items():
        path = method_docs.page_path(slug)
        assert path.is_file(), f"{names}: no page {path}; create it with: {method_docs.COMMAND}"
        text = path.read_text()
        assert method_docs.BEGIN in text and method_docs.END in text, path
        assert method_docs.status(text) not in ("—", "unwritten"), f"{path}: no **Status:** line"


def test_committed_pages_match_the_generator():
    stale = [str(p.relative_to(method_docs.ROOT)) for p in method_docs.stale()]
    assert not stale, (f"docs/methods out of date with the method specs: {stale}; "
                       f"regenerate with: {method_docs.COMMAND}")


def test_pages_do_not_point_outside_the_repository():
    for path in method_docs.DOCS.glob("*.md"):
        assert "shared" + "/" not in path.read_text(), path  # the notes the code was written from are not in the repository
