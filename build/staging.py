"""Nothing half-written: a build stage works in a new folder beside ``<out>/<name>/`` and only
a stage that succeeds replaces it, by rename (docs/decisions/atomic-build-output.md).

``staged`` yields that folder: empty for a first stage, a copy of the model's folder for a later
one (without its manifest, re-made only if the gate passes). On success the folder replaces
``<out>/<name>/``; on any failure it is removed, and an ``--out`` this build created is too.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from build.errors import BuildError
from service.model.manifest import MANIFEST_NAME


@contextmanager
def staged(out: Path, name: str, needs: str | None = None) -> Iterator[Path]:
    """A work folder for ``<out>/<name>``. ``needs``: a file the model folder must already
    hold (a later stage's input), copied with the rest; None starts empty."""
    target = out / name
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{name}.building-", dir=out))
    work.chmod(0o755)  # mkdtemp's 0700 would hide the model from the service's user
    try:
        if needs is not None:
            if not (target / needs).is_file():
                raise BuildError(
                    f"{target / needs} is missing: run the earlier stages first (--stage all)"
                )
            shutil.copytree(target, work, dirs_exist_ok=True)
            (work / MANIFEST_NAME).unlink(missing_ok=True)
        yield work
        replace(work, target)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise


def replace(new: Path, target: Path) -> None:
    """new -> target by rename; an old target is moved aside first and removed after. Both
    renames stay on one file system, so each is atomic."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{new.name.rsplit('-', 1)[-1]}")
        target.rename(old)
    new.rename(target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
