"""The benchmark workloads: one module per family, mirrored by name with ``kernels/``.

Every module in this folder is imported here and declares its workloads with ``bench.workload``;
``WORKLOADS`` then holds them all, for the CLI, ``pytest --benchmark`` and the report.  A module
dropped into this folder is picked up with no other edit.
"""
from __future__ import annotations

import importlib
import pkgutil

from bench.workload import REGISTRY, Workload

MODULES = tuple(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))
BY_MODULE: dict[str, list[str]] = {}     # module name -> the names of the workloads it declares
for _name in MODULES:
    _before = set(REGISTRY)
    importlib.import_module(f"{__name__}.{_name}")
    BY_MODULE[_name] = [w for w in REGISTRY if w not in _before]

WORKLOADS: dict[str, Workload] = REGISTRY
