"""Registries other packages extend: a package lists its modules under an entry-point group (`harness.tasks`,
`harness.suites`) and each module registers itself when imported."""
from __future__ import annotations

from importlib.metadata import entry_points


def load_entry_points(group: str, loaded: set[str]) -> None:
    """Import every module listed under `group` that `loaded` does not hold yet; `loaded` then marks the group as
    looked up (its "" entry), so a registry looks once per process unless asked again."""
    loaded.add("")
    for entry in entry_points(group=group):
        if entry.value not in loaded:
            loaded.add(entry.value)
            entry.load()
