"""The progress bar of an MD run: tqdm's, or one that shows nothing."""

from __future__ import annotations

__all__: list[str] = []


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, desc: str, enabled: bool) -> object:
    """A bar of ``total`` frames labelled ``desc`` (``update(n)``, ``close()``); a silent one unless ``enabled``."""
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="frame")
