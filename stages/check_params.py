"""check_params: the pipeline's first stage, so a bad params.yaml value stops DVC before it
removes any other stage's outputs.

DVC deletes a stage's outputs before running it, so a stage that validates only its own params
would lose finished work (a trained model, its loss curve) to a typo. Every stage depends on
CHECKED_FILE instead; its content never changes, so a passing check re-runs nothing downstream.
Besides the values (``run_stage`` validates them) it checks what they ask of this machine: a
``device: cuda`` without one, and a data.root folder that every fetch_data stage depends on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ddad.diffusion.engine import resolve_device
from ddad.errors import DdadError
from stages.common import run_stage

CHECKED_FILE = Path("params.checked")
CHECKED_TEXT = "params.yaml passed ddad's checks (written by the check_params stage)\n"


def main(params: dict[str, Any], argv: list[str]) -> None:
    """``run_stage`` has validated params.yaml; check the device and folder it asks for and
    record that all passed."""
    resolve_device(params["device"])
    root = Path(params["data"]["root"]).expanduser()
    if not root.is_dir():
        raise DdadError(
            f"data.root: {root} is not a folder; every fetch_data stage depends on it, whatever "
            f"data.source is: `mkdir -p {root}`, or set data.root to your images' folder"
        )
    CHECKED_FILE.write_text(CHECKED_TEXT)
    print("check_params: params.yaml is valid")


if __name__ == "__main__":
    run_stage(main)
