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
for _name in MODULES:
    importlib.import_module(f"{__name__}.{_name}")

WORKLOADS: dict[str, Workload] = REGISTRY
# module name -> the names of the workloads it declares (a module may import another's shapes)
BY_MODULE: dict[str, list[str]] = {m: [w.name for w in REGISTRY.values() if w.module == f"{__name__}.{m}"]
                                   for m in MODULES}
