"""The notebooks run on CPU from a clean kernel, and are stored without outputs."""

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")  # the dev extra; a GPU image may lack it (scripts/gpu_check.sh)
NotebookClient = pytest.importorskip("nbclient").NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_the_three_notebooks_exist():
    assert {p.stem for p in NOTEBOOKS} == {"quickstart", "anatomy", "ava"}


def test_notebooks_are_stored_without_outputs():
    """Cheap, so in ``make test``: a notebook saved with its outputs fails here before the e2e stage runs it."""
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(not c.outputs and c.execution_count is None for c in code), f"{path.name} is stored with outputs"


@pytest.mark.e2e  # a fresh Jupyter kernel per notebook, trainings inside: 5-35 s each
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stored_clean_and_runs(path, tmp_path, monkeypatch):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), f"{path.name} is stored with outputs"
    monkeypatch.setenv("MVIT_NOTEBOOK_DIR", str(tmp_path))
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend, so figures are captured
    client = NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}})
    client.execute(env=dict(os.environ))  # raises CellExecutionError with the failing cell on any error
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    assert images, f"{path.name} drew no figure"
