"""machine/cachedir.py: where the user's image cache is on each OS, and the record of the stores using it."""

from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path, PureWindowsPath

import pytest
from pymachine.engine import images
from pymachine.machine import cachedir
from pymachine.machine.cachedir import known_stores, record_store, user_cache_dir
from pymachine.machine.cacheusers import store_usage

HOME = "/home/ada"


@pytest.mark.parametrize("platform, environ, expected", [
    ("linux", {}, f"{HOME}/.cache/pymachine"),
    ("linux", {"XDG_CACHE_HOME": "/srv/xdg"}, "/srv/xdg/pymachine"),
    ("linux", {"XDG_CACHE_HOME": "relative/xdg"}, f"{HOME}/.cache/pymachine"),  # invalid per the XDG spec
    ("linux", {"XDG_CACHE_HOME": ""}, f"{HOME}/.cache/pymachine"),
    ("freebsd14", {}, f"{HOME}/.cache/pymachine"),
    ("darwin", {}, f"{HOME}/Library/Caches/pymachine"),
    ("darwin", {"XDG_CACHE_HOME": "/srv/xdg"}, f"{HOME}/Library/Caches/pymachine"),  # not XDG there
    ("linux", {"PYMACHINE_CACHE_DIR": "/big/disk/pm", "XDG_CACHE_HOME": "/srv/xdg"}, "/big/disk/pm"),
    ("darwin", {"PYMACHINE_CACHE_DIR": "/Volumes/x/pm"}, "/Volumes/x/pm"),
])
def test_unix_and_macos_cache_dirs(platform: str, environ: dict[str, str], expected: str) -> None:
    assert user_cache_dir(environ=environ, platform=platform, home=HOME) == Path(expected)


def test_windows_cache_dir_is_under_localappdata() -> None:
    local = r"C:\Users\ada\AppData\Local"
    got = user_cache_dir(environ={"LOCALAPPDATA": local}, platform="win32", home=r"C:\Users\ada")
    assert PureWindowsPath(str(got)) == PureWindowsPath(local, "pymachine", "Cache")
    # no LOCALAPPDATA (a stripped service environment): the profile's AppData\Local
    got = user_cache_dir(environ={}, platform="win32", home=r"C:\Users\ada")
    assert PureWindowsPath(str(got)) == PureWindowsPath(r"C:\Users\ada", "AppData", "Local", "pymachine", "Cache")
    got = user_cache_dir(environ={"LOCALAPPDATA": local, "PYMACHINE_CACHE_DIR": r"D:\pm"}, platform="win32")
    assert PureWindowsPath(str(got)) == PureWindowsPath(r"D:\pm")


def test_this_process_defaults_to_its_own_platform_and_home(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYMACHINE_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", "/home/someone")
    assert user_cache_dir() == Path("/home/someone/.cache/pymachine")
    monkeypatch.setenv("PYMACHINE_CACHE_DIR", "~/elsewhere")
    assert user_cache_dir() == Path("/home/someone/elsewhere")


def test_a_store_uses_the_shared_dir_first_then_its_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYMACHINE_CACHE_DIR", str(tmp_path / "cache"))
    cache = images.default_cache_dir(tmp_path / "store")
    assert cache.directory == tmp_path / "cache" / "images"
    assert cache.dirs == (tmp_path / "cache" / "images", tmp_path / "store" / "cache" / "images")
    assert known_stores(tmp_path / "cache") == []  # not a user of the cache until it takes an image
    assert images.find_image(cache) is None and known_stores(tmp_path / "cache") == []
    current = cache.directory / images.recipe_hash()
    current.mkdir(parents=True)
    for name in (images.DISK_NAME, images.KERNEL_NAME, images.INITRD_NAME, images.MANIFEST_NAME):
        (current / name).write_text("{}")
    assert images.find_image(cache) is not None
    assert known_stores(tmp_path / "cache") == [tmp_path / "store"]  # noted, for prune
    # the override pointing at the store's own directory: one directory, searched once
    monkeypatch.setenv("PYMACHINE_CACHE_DIR", str(tmp_path / "store" / "cache"))
    assert images.default_cache_dir(tmp_path / "store").dirs == (tmp_path / "store" / "cache" / "images",)


def test_recording_a_store_is_idempotent_atomic_and_private(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    record_store(root, tmp_path / "a")
    record_store(root, tmp_path / "b")
    record_store(root, tmp_path / "a" / ".." / "a")  # the same store spelled otherwise: once
    assert known_stores(root) == [tmp_path / "a", tmp_path / "b"]
    path = root / cachedir.STORES_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not [p.name for p in root.iterdir() if p.name.startswith(f".{cachedir.STORES_NAME}.tmp")]
    mtime = path.stat().st_mtime_ns
    record_store(root, tmp_path / "b")
    assert path.stat().st_mtime_ns == mtime  # known already: not rewritten


def test_concurrent_records_lose_no_store(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    stores = [tmp_path / f"s{i}" for i in range(12)]
    threads = [threading.Thread(target=record_store, args=(root, s)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(known_stores(root)) == sorted(stores)


def test_a_damaged_record_reads_as_empty_and_is_rewritten(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    root.mkdir()
    (root / cachedir.STORES_NAME).write_text("{not json")
    assert known_stores(root) == []
    record_store(root, tmp_path / "a")
    assert json.loads((root / cachedir.STORES_NAME).read_text()) == {"stores": [str(tmp_path / "a")]}


def _machine(store: Path, name: str, text: str) -> None:
    (store / "machines" / name).mkdir(parents=True)
    (store / "machines" / name / "config.json").write_text(text)


def test_store_usage_reads_every_store_and_names_what_it_could_not(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    here, other, broken, gone = (tmp_path / n for n in ("here", "other", "broken", "gone"))
    for store in (here, other, broken, gone):
        record_store(root, store)
    _machine(here, "m1", '{"BaseDisk": "/img/aaaa/disk.qcow2"}')
    _machine(other, "m2", '{"BaseDisk": "/img/bbbb/disk.qcow2"}')
    broken.mkdir()
    (broken / "machines").write_text("not a directory")  # unreadable, whoever runs the test (root too)
    usage = store_usage(root, here)
    assert usage.forgotten == [gone]
    assert [s for s, _why in usage.unseen] == [broken] and "Not a directory" in usage.unseen[0][1]
    assert usage.might_use(Path("/img/cccc"))  # a store unseen: every image might be used
    assert known_stores(root) == [here, other, broken]  # the gone one is dropped from the record

    (broken / "machines").unlink()
    usage = store_usage(root, here)
    assert usage.unseen == [] and usage.forgotten == []
    assert usage.might_use(Path("/img/aaaa")) and usage.might_use(Path("/img/bbbb"))
    assert not usage.might_use(Path("/img/cccc"))


def test_store_usage_of_an_unreadable_config(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    here = tmp_path / "here"
    (here / "machines" / "m1" / "config.json").mkdir(parents=True)  # a directory where the config should be
    usage = store_usage(root, here)
    assert [s for s, _ in usage.unseen] == [here]
    assert os.path.isdir(here)  # reading never changes the store


@pytest.mark.parametrize("platform, expected", [
    ("win32", PureWindowsPath(r"C:\Users\ada\AppData\Local", "pymachine", "Cache")),
    ("darwin", PureWindowsPath("/Users/ada/Library/Caches/pymachine")),
])
def test_other_platforms_through_this_process_values(platform: str, expected: PureWindowsPath,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The no-argument call, as the CLI makes it, with sys.platform and the environment of that OS."""
    monkeypatch.setattr(cachedir.sys, "platform", platform)
    monkeypatch.delenv("PYMACHINE_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("LOCALAPPDATA", r"C:\Users\ada\AppData\Local")
    monkeypatch.setenv("HOME", "/Users/ada")
    assert PureWindowsPath(str(user_cache_dir())) == expected
