"""The registry of zoo formats: built-in formats, register_format, entry points of installed packages."""

import inspect
import pkgutil
import sys
import textwrap

import pytest

import datamodules
from datamodules.arrow_zoo import ArrowZooDataModule
from nfn_lab.data import formats, register_format
from nfn_lab.data.zoo import ZooDataModule


@pytest.fixture(autouse=True)
def _no_registrations(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(formats, "_registered", {})


def test_every_format_module_of_datamodules_is_registered() -> None:
    found = formats.zoo_formats()
    assert found == {name: formats.import_class(path) for name, path in formats.BUILTIN_FORMATS.items()}
    for module_info in pkgutil.iter_modules(datamodules.__path__):
        module = __import__(f"datamodules.{module_info.name}", fromlist=["_"])
        classes = [
            c
            for c in vars(module).values()
            if inspect.isclass(c) and issubclass(c, ZooDataModule) and c.__module__ == module.__name__
        ]
        assert set(classes) <= set(found.values()), f"{module.__name__} has an unregistered format"


def test_register_format_by_class_or_class_path() -> None:
    class Mine(ArrowZooDataModule):
        pass

    register_format("mine", Mine)
    register_format("mine_by_path", "datamodules.arrow_zoo.ArrowZooDataModule")
    assert formats.format_class("mine") is Mine
    assert formats.format_class("mine_by_path") is ArrowZooDataModule
    assert {"mine", "mine_by_path", "arrow_zoo"} <= set(formats.format_names())
    register_format("arrow_zoo", Mine)  # a registration wins over a built-in of the same name
    assert formats.zoo_formats()["arrow_zoo"] is Mine


def test_class_paths_work_without_registering() -> None:
    assert formats.format_class("datamodules.arrow_zoo.ArrowZooDataModule") is ArrowZooDataModule
    with pytest.raises(KeyError):
        formats.format_class("keras")
    with pytest.raises(ImportError, match=r"cannot import the format class 'nowhere.Zoo'"):
        formats.format_class("nowhere.Zoo")


def test_bad_registrations_are_refused() -> None:
    with pytest.raises(ValueError, match="must be an identifier"):
        register_format("my zoo", ArrowZooDataModule)
    with pytest.raises(ValueError, match="is not a concrete ZooDataModule"):
        register_format("dict", dict)
    with pytest.raises(ValueError, match="is not a concrete ZooDataModule"):
        register_format("base", ZooDataModule)
    register_format("not_a_zoo", "collections.OrderedDict")  # checked when loaded
    with pytest.raises(ValueError, match="is not a concrete ZooDataModule"):
        formats.format_class("not_a_zoo")


def test_broken_formats_are_reported_and_skipped() -> None:
    register_format("broken", "nowhere.Zoo")
    reported = []
    found = formats.zoo_formats(on_error=lambda name, err: reported.append((name, type(err))))
    assert reported == [("broken", ImportError)] and "broken" not in found and "arrow_zoo" in found
    with pytest.warns(UserWarning, match="skipping zoo format 'broken'"):
        formats.zoo_formats()


@pytest.fixture
def installed_package(tmp_path, monkeypatch: pytest.MonkeyPatch):
    """A package ``fake_zoo_format`` installed on ``sys.path`` with a ``.dist-info`` declaring two entry points."""
    (tmp_path / "fake_zoo_format.py").write_text(
        textwrap.dedent(
            """
            from datamodules.arrow_zoo import ArrowZooDataModule

            class FakeZooDataModule(ArrowZooDataModule):
                pass
            """
        )
    )
    dist_info = tmp_path / "fake_zoo_format-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-zoo-format\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text(
        f"[{formats.ENTRY_POINT_GROUP}]\n"
        "fake = fake_zoo_format:FakeZooDataModule\n"
        "fake_broken = fake_zoo_format:Missing\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    sys.modules.pop("fake_zoo_format", None)


@pytest.mark.usefixtures("installed_package")
def test_an_installed_package_registers_its_format_by_entry_point() -> None:
    assert {"fake", "fake_broken"} <= set(formats.format_names())
    fake = formats.format_class("fake")
    assert fake.__name__ == "FakeZooDataModule" and issubclass(fake, ArrowZooDataModule)
    reported = []
    found = formats.zoo_formats(on_error=lambda name, err: reported.append(name))
    assert found["fake"] is fake and reported == ["fake_broken"]
    with pytest.raises(ImportError, match="fake_zoo_format:Missing"):
        formats.format_class("fake_broken")
