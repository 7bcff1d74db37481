"""A scan of the project's own source (specray/, jobs/) for ways to run code hidden in data: pickle and
its relatives, `torch.load` without `weights_only=True`, `numpy.load(allow_pickle=True)`, eval/exec,
and remote model code switched on in code rather than by the config. Artifacts are safetensors + JSON.

Tests are out of scope on purpose: they pickle to check Ray plumbing (ray.cloudpickle), which is what
Ray does with everything that crosses processes, never with a file this project reads.
"""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCANNED = ("specray", "jobs")
PICKLERS = {"pickle", "cPickle", "_pickle", "cloudpickle", "joblib", "dill", "shelve", "marshal", "read_pickle"}


def dotted(node: ast.AST) -> str:
    """`a.b.c` for a Name/Attribute chain, '' for anything else."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = dotted(node.value)
        return f"{base}.{node.attr}" if base else ""
    return ""


def keyword_is_true(call: ast.Call, name: str) -> bool:
    return any(k.arg == name and isinstance(k.value, ast.Constant) and k.value.value is True for k in call.keywords)


def imported(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        return [f"{node.module or ''}.{alias.name}" for alias in node.names]
    return []


def call_problem(call: ast.Call) -> str | None:
    name = dotted(call.func)
    if name == "torch.load" and not keyword_is_true(call, "weights_only"):
        return "torch.load without weights_only=True"
    if name in ("np.load", "numpy.load") and keyword_is_true(call, "allow_pickle"):
        return "numpy.load with allow_pickle=True"
    if name in ("eval", "exec"):
        return f"{name}()"
    if keyword_is_true(call, "trust_remote_code"):
        return "trust_remote_code=True in code (only models.trust_remote_code may turn it on)"
    return None


def problem(node: ast.AST) -> str | None:
    """What is unsafe about this node, or None."""
    for module in imported(node):
        if PICKLERS & set(module.split(".")) or module == "torch.load":
            return f"import {module}"
    if isinstance(node, ast.Attribute) and node.attr in PICKLERS:
        return f"use of {dotted(node) or node.attr}"
    if isinstance(node, ast.Call):
        return call_problem(node)
    return None


def violations(source: str, filename: str) -> list[str]:
    """`file:line: problem` for every unsafe node in `source`."""
    found = [(node.lineno, node.col_offset, why) for node in ast.walk(ast.parse(source, filename)) if (why := problem(node))]
    return [f"{filename}:{line}: {why}" for line, _, why in sorted(found)]


def test_project_source_loads_nothing_unsafely():
    files = sorted(p for directory in SCANNED for p in (REPO / directory).rglob("*.py"))
    assert len(files) > 50  # the scan really saw the package
    found = [v for f in files for v in violations(f.read_text(), str(f.relative_to(REPO)))]
    assert not found, "unsafe loading in project source:\n" + "\n".join(found)


SAMPLE = """\
import pickle
from ray import cloudpickle
import joblib as jl
import torch, numpy as np
state = torch.load("w.pt")
safe = torch.load("w.pt", weights_only=True)
arr = np.load("a.npy", allow_pickle=True)
obj = ray.cloudpickle.loads(blob)
model = AutoModel.from_pretrained(ref, trust_remote_code=True)
model = AutoModel.from_pretrained(ref, trust_remote_code=cfg.models.trust_remote_code)
eval("1 + 1")
model.eval()
"""


def test_the_scan_names_file_and_line_of_each_unsafe_call():
    assert violations(SAMPLE, "sample.py") == [
        "sample.py:1: import pickle",
        "sample.py:2: import ray.cloudpickle",
        "sample.py:3: import joblib",
        "sample.py:5: torch.load without weights_only=True",
        "sample.py:7: numpy.load with allow_pickle=True",
        "sample.py:8: use of ray.cloudpickle",
        "sample.py:9: trust_remote_code=True in code (only models.trust_remote_code may turn it on)",
        "sample.py:11: eval()",
    ]
