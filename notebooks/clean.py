"""Strip notebooks to what we commit: sources, no outputs, no execution counts, minimal metadata.

    python notebooks/clean.py                  # clean every notebooks/*.ipynb in place
    python notebooks/clean.py 01_layer_mapping.ipynb
    python notebooks/clean.py --check          # list notebooks that need cleaning; exit 1 if any

Kept: cell sources, cell ids, attachments, the cell metadata that changes how a notebook reads
(``tags`` such as ``parameters``, and ``jupyter.source_hidden`` for collapsed solution cells) and
the python3 kernelspec. Everything else goes: outputs, execution counts, language_info, widget
state, Colab/VS Code metadata. Local paths inside sources are not touched:
``tests/test_notebooks_clean.py`` finds them, and only an author can rewrite them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}
HERE = Path(__file__).resolve().parent


def clean_cell_metadata(metadata: dict) -> dict:
    kept = {}
    if metadata.get("tags"):
        kept["tags"] = list(metadata["tags"])
    if metadata.get("jupyter", {}).get("source_hidden"):
        kept["jupyter"] = {"source_hidden": True}
    return kept


def clean(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Return ``nb`` (changed in place) with outputs, counts and stray metadata removed."""
    nb.metadata = nbformat.from_dict({"kernelspec": dict(KERNELSPEC)})
    for cell in nb.cells:
        cell.metadata = nbformat.from_dict(clean_cell_metadata(cell.get("metadata", {})))
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    return nb


def cleaned_text(path: Path) -> str:
    nb = clean(nbformat.read(path, as_version=4))
    nbformat.validate(nb)
    return nbformat.writes(nb) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: every notebooks/*.ipynb")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a notebook needs cleaning")
    args = parser.parse_args(argv)
    paths = [p if p.exists() else HERE / p for p in args.notebooks] or sorted(HERE.glob("*.ipynb"))
    dirty = []
    for path in paths:
        text = cleaned_text(path)
        if text != path.read_text(encoding="utf-8"):
            dirty.append(path.name)
            if not args.check:
                path.write_text(text, encoding="utf-8")
    verb = "need cleaning" if args.check else "cleaned"
    print(f"{verb}: {', '.join(dirty)}" if dirty else f"all {len(paths)} notebook(s) clean")
    return 1 if dirty and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
