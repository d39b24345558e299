"""Write the shipped test data again: ``python -m tests.data.regenerate [OUT_DIR]``.

Needs TensorFlow and scikit-learn (``pip install -e '.[convert]'``). It trains the
digits classifier and the three members of the task ``digits``, converts them into
``OUT_DIR/pool`` (default: this directory), saves the held-out split as
``OUT_DIR/digits_test.npz`` and the kind of machine they were made on as
``OUT_DIR/made_on.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from splitmq.converter.pool import PoolEntry
from tests.data import (
    DATA_DIR,
    DIGITS,
    DIGITS_EPOCHS,
    DIGITS_VARIANTS,
    MADE_ON,
    TASK,
    TASK_MEMBERS,
    machine_kind,
)

if TYPE_CHECKING:
    from splitmq.converter.isolated import FrontEndProcess


def regenerate(out_dir: Path, front_end: FrontEndProcess | None = None) -> PoolEntry:
    """Train, convert and save the digits classifier; its existing entry in
    ``out_dir/pool`` is replaced (the pool's other models are left as they are)."""
    from splitmq.converter.digits import load_split, train_and_convert

    pool = out_dir / "pool"
    shutil.rmtree(pool / DIGITS, ignore_errors=True)
    entry = train_and_convert(
        pool, name=DIGITS, epochs=DIGITS_EPOCHS, variants=DIGITS_VARIANTS, front_end=front_end
    )
    _, _, x_test, y_test = load_split()
    np.savez_compressed(out_dir / "digits_test.npz", x_test=x_test, y_test=y_test)
    record = {"machine": machine_kind(), "created_with": entry.manifest.created_with}
    (out_dir / MADE_ON.name).write_text(json.dumps(record, indent=1) + "\n")
    return entry


def regenerate_task(pool: Path, front_end: FrontEndProcess | None = None) -> list[PoolEntry]:
    """Train and convert the task's members into ``pool``, replacing their entries."""
    from splitmq.converter.digits import train_and_convert

    for name in TASK_MEMBERS:
        shutil.rmtree(pool / name, ignore_errors=True)
    return [
        train_and_convert(
            pool,
            name=name,
            epochs=epochs,
            size=size,
            task=TASK,
            variants=DIGITS_VARIANTS,
            front_end=front_end,
        )
        for name, (size, epochs) in TASK_MEMBERS.items()
    ]


def main() -> None:
    from splitmq.converter.isolated import FrontEndProcess

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", nargs="?", type=Path, default=DATA_DIR)
    args = parser.parse_args()
    with FrontEndProcess() as front_end:  # one TensorFlow for all
        entry = regenerate(args.out_dir, front_end)
        members = regenerate_task(args.out_dir / "pool", front_end)
    print(f"wrote {entry.path}, {', '.join(str(m.path) for m in members)}")
    print(f"and {args.out_dir / 'digits_test.npz'}")


if __name__ == "__main__":
    main()
