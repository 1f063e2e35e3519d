"""The files the README's and the guide's examples send, copied from the CC0 photos that ship
in scikit-image and matplotlib (build/data.py lists them), plus a text file that is not an
image. ``make samples`` runs it; the examples are run from the repository root.

    python -m build.samples [DIR]        (default: samples/)
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from build.data import package_photos

# example name -> the package photo it is
PHOTOS = {
    "photo.jpg": "grace_hopper.jpg",
    "rocket.jpg": "rocket.jpg",
    "chelsea.png": "chelsea.png",
    "coffee.png": "coffee.png",
}
NOTES = "Not an image: the batch example sends this file to show a per-image 400.\n"


def write_samples(folder: Path) -> list[Path]:
    by_name = {image.path.name: image.path for image in package_photos()}
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, source in PHOTOS.items():
        written.append(Path(shutil.copyfile(by_name[source], folder / name)))
    (notes := folder / "notes.txt").write_text(NOTES)
    return [*written, notes]


if __name__ == "__main__":
    for path in write_samples(Path(sys.argv[1] if len(sys.argv) > 1 else "samples")):
        print(path)
