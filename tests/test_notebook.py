"""The walk-through notebook runs top to bottom on the real PTB, so that it cannot rot: its
own cells assert the tutorial's numbers (the first batch's ids, the initial cost)."""

import nbclient
import nbformat
import pytest
from helpers import REPO
from test_runs import real_ptb_dir

pytestmark = pytest.mark.slow


def test_the_walkthrough_notebook_runs_top_to_bottom(tmp_path):
    real_ptb_dir()  # skips without the PTB files
    notebook = nbformat.read(REPO / "notebooks" / "walkthrough.ipynb", as_version=4)
    assert not any(cell.get("outputs") for cell in notebook.cells), "commit it without outputs"
    client = nbclient.NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": tmp_path}}
    )
    client.execute()
    outputs = [output for cell in notebook.cells for output in cell.get("outputs", [])]
    text = "".join(output.get("text", "") for output in outputs)
    assert "valid_perplexity" in text and "'the stock' ->" in text
    images = [
        o for c in notebook.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})
    ]
    assert len(images) == 1  # the t-SNE picture
    assert notebook.cells[-1].outputs[0]["text"] == "False\n"  # its temporary run removed
