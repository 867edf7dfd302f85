"""``seqbench inspect``: parse and check the command line, then compile our shipped configurations
(bench.tools.kernel_inspect) or, with ``--peers``, ours beside the peers' (bench.tools.peer_inspect), and
write the tables.  Its own module so that neither of those two imports the other's command."""
from __future__ import annotations

import argparse
import json
import os
import sys

from bench.schema import writable_folder
from bench.tools import peer_inspect
from bench.tools.kernel_inspect import ARCHS, KERNEL_MODULES, SASS_MODES, inspect_kernels, to_table


DESCRIPTION = ("Compile every shipped kernel configuration for sm_80 and sm_90a on this machine (no GPU needed) and "
               "show what the compiler made of it: registers, spills, shared memory, occupancy and the SASS that "
               "matters (tensor-core and memory instructions).")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="seqbench inspect", description=DESCRIPTION)
    ap.error = lambda message: ap.exit(2, f"seqbench inspect: error: {message}\n")
    ap.add_argument("--arch", default=",".join(ARCHS), help=f"comma list from {', '.join(ARCHS)} (default both)")
    ap.add_argument("--only", dest="kernel", default=",".join(KERNEL_MODULES), metavar="NAMES",
                    help=f"comma list of kernel families from {', '.join(KERNEL_MODULES)} (default all); with --peers, "
                         "also a leading part of a comparison's name, such as scan.sequential")
    ap.add_argument("--kernel", dest="kernel", default=argparse.SUPPRESS, help=argparse.SUPPRESS)   # the old name
    ap.add_argument("--dtype", default="float16", help="comma list of float16, bfloat16, float32 (default float16)")
    ap.add_argument("--peers", action="store_true",
                    help="compile the peers' Triton kernels (fla, FlashRNN; the peers extra) beside ours at matched "
                         "shapes and print the static counts with ours / peer and the targets (--arch, --jobs, "
                         "--only, --json and --out apply)")
    ap.add_argument("--sass", choices=SASS_MODES, default="all",
                    help="all: disassemble every build (default); tensor-core: only 16-bit kernels with a dot and TMA "
                         "configs, whose tensor-core use is checked (the compile check's fast path; the others' SASS "
                         "columns stay empty)")
    ap.add_argument("--jobs", type=int, default=None, help="parallel compiles (default: the usable cores)")
    ap.add_argument("--json", metavar="FILE", help="write the rows as JSON ('-' for stdout, nothing else printed)")
    ap.add_argument("--out", metavar="DIR", help="folder for inspect.csv and inspect.md (default runs/<date>-inspect)")
    return ap


def main(argv=None) -> int:
    import time
    ap = build_parser()
    a = ap.parse_args(argv)
    a.out = a.out or os.path.join("runs", f"{time.strftime('%Y-%m-%d')}-inspect")
    archs = [x for x in a.arch.split(",") if x]
    kernels = [x for x in a.kernel.split(",") if x]
    dtypes = [x for x in a.dtype.split(",") if x]
    checked = ((archs, ARCHS, "--arch"), (kernels, KERNEL_MODULES, "--only"),
               (dtypes, ("float16", "bfloat16", "float32"), "--dtype"))
    for value, allowed, what in checked[::2] if a.peers else checked:     # --peers: its own names, below
        bad = [x for x in value if x not in allowed]
        if bad or not value:
            ap.error(f"{what}: {'unknown ' + str(bad) if bad else 'names nothing'}; expected some of {list(allowed)}")
    if a.jobs is not None and a.jobs < 1:
        ap.error(f"--jobs must be a positive integer, got {a.jobs}")
    problem = writable_folder(a.out)            # before the compiles, which take minutes
    if a.json not in (None, "-"):
        problem = problem or (f"--json {a.json} is a folder" if os.path.isdir(a.json) else
                              writable_folder(os.path.dirname(os.path.abspath(a.json))))
    if a.peers and a.kernel == ",".join(KERNEL_MODULES):      # no --only: every comparison
        kernels = sorted({c.kernel.split(".")[0] for c in peer_inspect.COMPARISONS})
    elif a.peers:
        bad = [n for n in kernels if not peer_inspect.comparisons_for([n], archs)]
        if bad:
            ap.error(f"--peers: no comparison for {', '.join(bad)} on {', '.join(archs)}; the comparisons are "
                     f"{', '.join(c.kernel for c in peer_inspect.COMPARISONS)} (a family or a leading part of a "
                     "name picks them)")
    if problem:
        ap.error(problem)
    if a.peers:
        return _peers_main(archs, kernels, a)
    rows = inspect_kernels(kernels, archs, dtypes, a.jobs, a.sass)
    if a.json == "-":
        json.dump(rows, sys.stdout)
        return 0
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
    table = to_table(rows)
    shown = table.drop(columns=["uses_dot"])
    shown = shown.loc[:, [c for c in shown.columns if shown[c].astype(bool).any() or c in ("ok", "spill_bytes")]]
    md = shown.to_markdown(index=False)
    print(md)
    if a.out:
        os.makedirs(a.out, exist_ok=True)
        print(f"\nsaved {a.out}/inspect.csv and {a.out}/inspect.md", file=sys.stderr)
        table.to_csv(os.path.join(a.out, "inspect.csv"), index=False)
        with open(os.path.join(a.out, "inspect.md"), "w") as f:
            f.write(md + "\n")
    failed = [r for r in rows if not r["ok"] or r["spill_bytes"]]
    if failed:
        print(f"\n{len(failed)} of {len(rows)} configurations failed to compile, overflowed shared memory or spilled",
              file=sys.stderr)
    return 1 if failed else 0


def _peers_main(archs, kernels, a) -> int:
    """``--peers``: the comparison records (bench.tools.peer_inspect) as a table, CSV, Markdown and JSON."""
    records = peer_inspect.inspect_peers(archs, a.jobs, kernels)
    if a.json == "-":
        json.dump(records, sys.stdout)
        return 0
    if a.json:
        with open(a.json, "w") as f:
            json.dump(records, f, indent=1)
    try:
        import pandas as pd     # here: the records alone need no pandas (the newest-Triton CI venv has none)
    except ImportError:
        print("seqbench inspect --peers: the table needs pandas (pip install pandas)"
              + (f"; the records are in {a.json}" if a.json else "; --json FILE writes the records without it"),
              file=sys.stderr)
        return 0 if a.json else 2
    md = peer_inspect.to_markdown(records)
    print(md)
    os.makedirs(a.out, exist_ok=True)
    pd.DataFrame(records).to_csv(os.path.join(a.out, "peers.csv"), index=False)
    with open(os.path.join(a.out, "peers.md"), "w") as f:
        f.write(md + "\n")
    print(f"\nsaved {a.out}/peers.csv and {a.out}/peers.md", file=sys.stderr)
    targets = [r for r in records if r["met"] is not None]
    print(f"targets met: {sum(r['met'] for r in targets)} of {len(targets)}", file=sys.stderr)
    ours_bad = [r for r in records if r["note"].startswith("ours:") or (r["metric"] == "spill_bytes" and r["ours"])]
    if ours_bad:
        print(f"{len(ours_bad)} of our records failed to compile or spilled", file=sys.stderr)
    return 1 if ours_bad else 0


if __name__ == "__main__":
    sys.exit(main())
