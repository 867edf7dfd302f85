"""The one row type of results.csv, and the only code that writes or reads that file.

``Row`` owns the columns: their names, order and types.  ``RowWriter`` appends rows and makes each
durable before the next point starts; ``read_rows`` reads a run back and keeps only rows that were
written whole, so a line cut off by a crash is never mistaken for a finished point.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import tempfile
from dataclasses import dataclass, fields


def describe(exc: BaseException, limit: int = 300) -> str:
    """'Type: first line of the message' for a row's reason (one line, at most ``limit`` characters of it)."""
    first = str(exc).splitlines()[0][:limit] if str(exc) else ""
    return f"{type(exc).__name__}: {first}"


class RunFolderError(ValueError):
    """A run folder whose results.csv or run.json cannot be read as seqbench wrote it."""


class _CsvRow:
    """csv_record for a row dataclass: its fields by name, None as the empty cell."""

    def csv_record(self) -> dict:
        return {k: ("" if v is None else v) for k, v in dataclasses.asdict(self).items()}


@dataclass
class Row(_CsvRow):
    """One (workload, impl, mode, dtype, shape) point.  Empty fields are None."""

    workload: str
    impl: str
    mode: str
    dtype: str
    shape: str
    seq_len: int | None = None
    batch: int | None = None
    tokens: int | None = None
    status: str = ""               # ok | unstable | skipped | unsupported | oom | timeout | error
    reason: str = ""
    ms: float | None = None        # median
    ms_p20: float | None = None
    ms_p80: float | None = None
    reps: int | None = None        # timed repetitions behind the quantiles
    calls_per_rep: int | None = None   # calls each repetition averages (1 on a GPU)
    spread: float | None = None    # (ms_p80 − ms_p20) / ms: over the device's limit, the point is measured again
    timer: str | None = None
    threads: int | None = None     # torch's CPU threads while measuring
    load_start: float | None = None    # the host's 1-minute load average before and after the point
    load_end: float | None = None
    host_probe_ms: float | None = None     # a fixed single-thread loop around the CPU windows: the host's speed
    tokens_per_s: float | None = None
    tflops: float | None = None
    gbps: float | None = None
    pct_peak_flops: float | None = None
    pct_peak_bw: float | None = None
    peak_mem_mib: float | None = None
    # the output against the baseline implementation's on the same inputs
    baseline: str | None = None
    max_abs_err: float | None = None
    tolerance: float | None = None
    accurate: bool | None = None
    config: str | None = None      # what the autotuner chose, where a Triton kernel ran
    compile_s: float | None = None     # setup and first call, wall time: torch.compile, Triton compile and autotune
    point_s: float | None = None       # the whole point, wall time: setup, timing, NVML, profiler, accuracy
    roofline_gpu: str | None = None
    floor_ms: float | None = None
    floor_bound: str | None = None
    measured_over_floor: float | None = None
    peak_tokens_per_s: float | None = None
    nvml_util_pct: float | None = None
    nvml_mem_util_pct: float | None = None
    sm_clock_mhz: float | None = None
    power_w: float | None = None
    energy_j: float | None = None
    joules_per_token: float | None = None
    throttle_reasons: str | None = None
    gpm_sm_util_pct: float | None = None
    gpm_sm_occupancy_pct: float | None = None
    gpm_tensor_util_pct: float | None = None
    gpm_dram_bw_util_pct: float | None = None
    nvml_window_s: float | None = None
    nvml_reason: str | None = None
    kernels_ran: str | None = None
    device: str | None = None


COLUMNS = [f.name for f in fields(Row)]
KEY = ("workload", "impl", "mode", "dtype", "shape")
NVML_FIELDS = ("nvml_util_pct", "nvml_mem_util_pct", "sm_clock_mhz", "power_w", "energy_j", "joules_per_token",
               "throttle_reasons", "gpm_sm_util_pct", "gpm_sm_occupancy_pct", "gpm_tensor_util_pct",
               "gpm_dram_bw_util_pct")
_TYPES = {f.name: f.type.split(" | ")[0] for f in fields(Row)}
NUMERIC = tuple(k for k, t in _TYPES.items() if t in ("int", "float"))
REQUIRED = KEY + ("status",)


def _numeric(row_cls) -> tuple:
    return tuple(f.name for f in fields(row_cls) if f.type.split(" | ")[0] in ("int", "float"))


@dataclass
class TrainRow(_CsvRow):
    """One evaluation of one model in ``seqbench train`` (train.csv).  The NVML fields cover the training
    steps since the previous evaluation (evaluation excluded); empty on a CPU, with the reason."""

    model: str
    impl: str
    step: int
    tokens_seen: int
    train_seconds: float           # training wall time so far, evaluation excluded
    warmup_s: float | None = None  # this start's untimed first forward+backward (compiles, autotuning), first row
    train_loss: float | None = None        # mean over the steps since the previous evaluation, nats/byte
    val_bpb: float | None = None   # bits per byte on the fixed validation slice
    tokens_per_s: float | None = None      # over the interval, every rank counted
    grad_norm: float | None = None         # mean pre-clipping global norm over the interval
    lr: float | None = None
    params: int | None = None
    d_model: int | None = None
    world_size: int | None = None
    dtype: str | None = None
    final: bool | None = None      # the model's last evaluation: its run is complete
    status: str = "ok"             # ok | error | oom
    reason: str = ""
    nvml_util_pct: float | None = None
    nvml_mem_util_pct: float | None = None
    sm_clock_mhz: float | None = None
    power_w: float | None = None
    energy_j: float | None = None
    joules_per_token: float | None = None
    throttle_reasons: str | None = None
    gpm_sm_util_pct: float | None = None
    gpm_sm_occupancy_pct: float | None = None
    gpm_tensor_util_pct: float | None = None
    gpm_dram_bw_util_pct: float | None = None
    nvml_window_s: float | None = None
    nvml_reason: str | None = None

    REQUIRED = ("model", "impl", "step", "status")


TRAIN_COLUMNS = [f.name for f in fields(TrainRow)]


@dataclass
class TranslateRow(_CsvRow):
    """One evaluation of one model in ``seqbench translate`` (translate.csv): greedy decoding of the fixed
    held-out set scored by sacrebleu, overall and per source-length bucket (bench.translate.data.BUCKETS).
    Tokens are source + target tokens; the NVML fields cover the training steps since the last row."""

    model: str
    impl: str
    step: int
    tokens_seen: int
    train_seconds: float           # training wall time so far, evaluation excluded
    warmup_s: float | None = None  # this start's untimed first forward+backward (compiles, autotuning), first row
    wall_seconds: float | None = None      # since the model's start, evaluations included
    train_loss: float | None = None        # mean over the interval, nats per target token
    val_loss: float | None = None  # teacher-forced on the held-out set, nats per target token
    bleu: float | None = None
    bleu_1_4: float | None = None
    bleu_5_10: float | None = None
    bleu_11_14: float | None = None
    bleu_15_20: float | None = None
    bleu_21_24: float | None = None
    bleu_25_30: float | None = None
    bleu_31_39: float | None = None
    bleu_40_plus: float | None = None
    tokens_per_s: float | None = None
    grad_norm: float | None = None
    lr: float | None = None
    params: int | None = None
    d_model: int | None = None
    world_size: int | None = None
    dtype: str | None = None
    final: bool | None = None
    status: str = "ok"             # ok | error | oom
    reason: str = ""
    nvml_util_pct: float | None = None
    nvml_mem_util_pct: float | None = None
    sm_clock_mhz: float | None = None
    power_w: float | None = None
    energy_j: float | None = None
    joules_per_token: float | None = None
    throttle_reasons: str | None = None
    gpm_sm_util_pct: float | None = None
    gpm_sm_occupancy_pct: float | None = None
    gpm_tensor_util_pct: float | None = None
    gpm_dram_bw_util_pct: float | None = None
    nvml_window_s: float | None = None
    nvml_reason: str | None = None

    REQUIRED = ("model", "impl", "step", "status")


TRANSLATE_COLUMNS = [f.name for f in fields(TranslateRow)]


@dataclass
class GradientRow(_CsvRow):
    """One input position of one (model, seed) in ``seqbench gradients`` (gradients.csv): the norm of the
    loss's gradient with respect to the input at that position.  A failed (model, seed) is one row with
    its status and reason and no position."""

    model: str
    impl: str                      # kernels | torch
    seed: int
    source: str                    # "default init" or the checkpoint's path
    seq_len: int
    hidden: int | None = None
    position: int | None = None
    grad_norm: float | None = None
    status: str = "ok"             # ok | error | oom
    reason: str = ""
    device: str = ""

    REQUIRED = ("model", "impl", "seed", "position", "grad_norm", "status")


GRADIENT_COLUMNS = [f.name for f in fields(GradientRow)]


def row_key(r) -> tuple:
    return tuple(str(r[k]) for k in KEY)


def _number_ok(text: str, integer: bool = False) -> bool:
    """A cell of a numeric column: empty, a float (nan included), or for an int column a whole number."""
    try:
        if text == "":
            return True
        value = float(text)
        return value.is_integer() if integer else (value == value or text.lower() == "nan")
    except ValueError:
        return False


def read_rows(path: str, row_cls=None) -> tuple[list[dict], int]:
    """(rows written whole, count of rows dropped as incomplete); [] for a missing file.

    A row counts as whole when its line ends in a newline (RowWriter writes and syncs line by line,
    so a crash can only cut the last one), it has every column of the header, and its numbers parse.
    Raises RunFolderError for a file that is not a seqbench results.csv at all (``row_cls``: a file of
    that dataclass's rows instead, e.g. TrainRow for train.csv).
    """
    required, numeric = (REQUIRED, NUMERIC) if row_cls in (None, Row) else (row_cls.REQUIRED, _numeric(row_cls))
    integers = {f.name for f in fields(row_cls or Row) if f.type.split(" | ")[0] == "int"}
    kind = os.path.basename(path) if row_cls not in (None, Row) else "results.csv"
    if not os.path.exists(path):
        return [], 0
    _regular_file(path, kind)
    try:
        with open(path, newline="") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise RunFolderError(f"cannot read {path}: {exc}") from None
    if not text.strip():
        raise RunFolderError(f"{path} is empty (no header): not a seqbench {kind}")
    dropped = 0
    if not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
        dropped += 1
    try:
        records = list(csv.reader(io.StringIO(text), strict=True))
    except csv.Error as exc:
        raise RunFolderError(f"{path} is not valid CSV ({exc})") from None
    if not records:
        raise RunFolderError(f"{path} has no complete header line")
    header, body = records[0], records[1:]
    missing = [c for c in required if c not in header]
    if missing:
        raise RunFolderError(f"{path} lacks the column(s) {missing}: not a seqbench {kind}")
    rows = []
    for rec in body:
        if len(rec) != len(header):
            dropped += 1
            continue
        r = dict(zip(header, rec))
        if not all(_number_ok(r[c], c in integers) for c in numeric if c in r):
            dropped += 1
            continue
        rows.append(r)
    return rows, dropped


def _umask() -> int:
    """The process's umask (read by setting it, then restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str, write, newline=None, binary: bool = False) -> None:
    """Write ``path`` through a synced temporary file and a rename: a crash leaves the old file or the new one.
    ``write(f)`` fills the open temporary file (text, or bytes with ``binary``)."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        os.fchmod(fd, 0o666 & ~_umask())      # mkstemp makes it 0600: follow the umask, as open() would
        with (os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", newline=newline)) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def writable_folder(path: str) -> str | None:
    """Why ``path`` cannot take a run's files, or None when it can.  Writes nothing: a missing folder is judged
    by its nearest existing parent, and a command creates it only once every argument has been checked."""
    if os.path.exists(path) and not os.path.isdir(path):
        return f"--out {path} exists and is not a folder"
    probe = os.path.abspath(path)
    too_long = [part for part in probe.split(os.sep) if len(part.encode(errors="surrogateescape")) > 255]
    if too_long:
        return f"cannot write to {path}: File name too long ({too_long[0][:40]}…)"
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe):
        return f"cannot write to {path}: {probe} is not a folder"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"cannot write to {path}: Permission denied ({probe} is not writable)"
    return None


class RowWriter:
    """Writes results.csv: the header and any kept rows replace the file atomically (the old file stays
    whole until then); ``write`` then appends one row and syncs it to disk."""

    def __init__(self, path: str, kept: list[dict] = (), columns: list[str] = COLUMNS):
        def header_and_kept(f):
            w = csv.DictWriter(f, fieldnames=columns, restval="", extrasaction="ignore", lineterminator="\n")
            w.writeheader()
            w.writerows(kept)
        atomic_write(path, header_and_kept, newline="")
        self.path, self.columns = path, columns
        self.f = open(path, "a", newline="")
        self.w = csv.DictWriter(self.f, fieldnames=columns, restval="", lineterminator="\n")

    def write(self, row) -> None:
        self.write_many([row])

    def rewrite(self, rows: list[dict]) -> None:
        """Replace the whole file with ``rows`` (atomically, as at the start), then go on appending."""
        self.f.close()
        self.__init__(self.path, rows, self.columns)

    def write_many(self, rows) -> None:
        """Append rows that finish together (one sync for all)."""
        self.w.writerows(r.csv_record() for r in rows)
        self.f.flush()
        os.fsync(self.f.fileno())

    def close(self):
        self.f.close()


def write_json(path: str, obj) -> None:
    atomic_write(path, lambda f: json.dump(obj, f, indent=1, default=str))


# The fields of a run's JSON (run.json, train.json, suite.json) that code reads, and the type each must have.
JSON_FIELDS = {"environment": dict, "checks": list, "stability": dict, "config": dict, "corpus": dict,
               "steps": list, "finished": (list, str), "nvml": dict, "resumed": dict}


def _check_json(obj, path: str) -> dict:
    """``obj`` read from ``path``, if it is shaped as seqbench writes it: an object whose known fields have their
    types (JSON_FIELDS), each kernel check an object with its fields; RunFolderError naming what is not."""
    kind = os.path.basename(path)
    if not isinstance(obj, dict):
        raise RunFolderError(f"{path} is not a seqbench {kind}: it holds a JSON {type(obj).__name__}, not an object")
    for key, kind_of in JSON_FIELDS.items():
        if key in obj and obj[key] is not None and not isinstance(obj[key], kind_of):
            raise RunFolderError(f"{path} is not a seqbench {kind}: its {key!r} is a {type(obj[key]).__name__}")
    env = obj.get("environment") or {}
    if not isinstance(env.get("nvml") or {}, dict) or not isinstance(env.get("device", ""), str):
        raise RunFolderError(f"{path} is not a seqbench {kind}: its environment's 'nvml' or 'device' is malformed")
    for c in obj.get("checks") or []:
        if (not isinstance(c, dict) or not isinstance(c.get("kernel"), str) or not isinstance(c.get("ok"), bool)
                or not isinstance(c.get("seconds"), (int, float))):
            raise RunFolderError(f"{path} is not a seqbench {kind}: a kernel check is malformed ({str(c)[:80]})")
    limit = (obj.get("stability") or {}).get("spread_limit")
    if limit is not None and not isinstance(limit, (int, float)):
        raise RunFolderError(f"{path} is not a seqbench {kind}: its stability's spread_limit is not a number")
    return obj


def _regular_file(path: str, kind: str) -> None:
    """RunFolderError unless ``path`` is a regular file (a folder, a FIFO or a device would fail or block)."""
    if not os.path.isfile(path):
        raise RunFolderError(f"{path} is not a file: not a seqbench {kind}")


def read_json(path: str) -> dict:
    """A run's JSON file (run.json, train.json, suite.json), or {} when there is none; RunFolderError when it is
    not JSON or not shaped as seqbench writes it."""
    if not os.path.exists(path):
        return {}
    _regular_file(path, os.path.basename(path))
    try:
        with open(path) as f:
            obj = json.load(f)
    except (OSError, ValueError, RecursionError) as exc:
        raise RunFolderError(f"{path} is not a readable {os.path.basename(path)} ({type(exc).__name__}: "
                             f"{str(exc)[:120]})") from None
    return _check_json(obj, path)
