"""Atomic output folders: staged beside the destination, renamed into place, never deleting other data."""

import pytest

from nfn_lab.data.staging import StagedDirectory, StagedWriter, check_destination


def _zoo(root, text: str):
    root.mkdir()
    (root / "zoo.json").write_text(text)
    return root


def test_commit_moves_the_folder_into_place(tmp_path) -> None:
    staged = StagedDirectory(tmp_path / "out")
    (staged.path / "zoo.json").write_text("new")
    assert not (tmp_path / "out").exists()  # nothing at the destination before commit
    staged.commit()
    assert (tmp_path / "out" / "zoo.json").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # the staging folder is gone


def test_abort_leaves_the_destination_as_it_was(tmp_path) -> None:
    root = _zoo(tmp_path / "out", "old")
    staged = StagedDirectory(root, overwrite=True)
    (staged.path / "zoo.json").write_text("new")
    staged.abort()
    assert (root / "zoo.json").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_overwrite_replaces_a_zoo_only_on_commit(tmp_path) -> None:
    root = _zoo(tmp_path / "out", "old")
    staged = StagedDirectory(root, overwrite=True)
    (staged.path / "zoo.json").write_text("new")
    assert (root / "zoo.json").read_text() == "old"
    staged.commit()
    assert (root / "zoo.json").read_text() == "new"


def test_destinations_that_are_refused(tmp_path) -> None:
    check_destination(tmp_path / "missing", overwrite=False)
    (tmp_path / "empty").mkdir()
    check_destination(tmp_path / "empty", overwrite=False)
    (tmp_path / "file").write_text("")
    with pytest.raises(FileExistsError, match="is a file"):
        check_destination(tmp_path / "file", overwrite=True)
    zoo = _zoo(tmp_path / "zoo", "old")
    with pytest.raises(FileExistsError, match="not empty; pass overwrite=True"):
        check_destination(zoo, overwrite=False)
    check_destination(zoo, overwrite=True)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not an nfn-lab zoo"):  # overwrite never deletes other data
        StagedDirectory(tmp_path / "notes", overwrite=True)
    assert (tmp_path / "notes" / "keep.txt").read_text() == "keep me"


def test_commit_checks_the_destination_again(tmp_path) -> None:
    staged = StagedDirectory(tmp_path / "out")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "meanwhile.txt").write_text("appeared")
    with pytest.raises(FileExistsError, match="not empty"):
        staged.commit()
    assert (tmp_path / "out" / "meanwhile.txt").read_text() == "appeared"
    staged.abort()


class _TextWriter(StagedWriter):
    """One file, ``text.txt``; fails to finish when told to."""

    def __init__(self, root, fail: bool = False) -> None:
        self._staged = StagedDirectory(root)
        self.fail, self.released = fail, 0

    def _finish(self) -> None:
        if self.fail:
            raise OSError("disk full")
        (self._staged.path / "text.txt").write_text("done")

    def _release(self) -> None:
        self.released += 1


def test_staged_writer_publishes_once(tmp_path) -> None:
    with _TextWriter(tmp_path / "out") as writer:
        assert not writer.ended
        assert writer.close() == (tmp_path / "out").absolute()
    assert writer.ended and (tmp_path / "out" / "text.txt").read_text() == "done"


def test_staged_writer_aborts_on_a_failed_close_and_refuses_to_close_after(tmp_path) -> None:
    writer = _TextWriter(tmp_path / "out", fail=True)
    with pytest.raises(OSError, match="disk full"):
        writer.close()
    assert writer.released == 1 and list(tmp_path.iterdir()) == []
    with pytest.raises(RuntimeError, match="was aborted; nothing was written"):
        writer.close()


def test_staged_writer_aborts_when_its_block_raises(tmp_path) -> None:
    with pytest.raises(KeyError), _TextWriter(tmp_path / "out") as writer:
        raise KeyError("boom")
    assert writer.ended and writer.released == 1 and list(tmp_path.iterdir()) == []
