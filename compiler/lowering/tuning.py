"""Optional MetaSchedule tuning of a relax module on the build host, then compilation with the best schedules.

Untuned relax compiles every TIR function as written (no parallelism, no vectorisation). MetaSchedule searches
schedules per fused operator by building and timing candidates, so it only works for targets this machine can
run: the `x86_64` profiles. Tuning records live in memory (no JSON database on disk) and are applied in the
same process.

Requirements checked before tuning, each with a typed error and an install hint:
- `psutil` and `cloudpickle` (TVM's process pool runs the candidates in a child process);
- `xgboost` only for `cost_model="xgb"`;
- an `apache-tvm-ffi` whose JSON serialiser works: MetaSchedule deep-copies modules through
  `tvm.ir.save_json`, which segfaults with apache-tvm-ffi 0.1.15.* and apache-tvm 0.27.0.post1
  (0.1.14.post1 works). The check runs in a child process, since a segfault cannot be caught.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from hgen.compiler.errors import CompilerError, InvalidArgumentError
from hgen.compiler.lowering.tvm_relax import import_tvm, tvm_target
from hgen.runtime.bundle.elf import host_machine

if TYPE_CHECKING:
    from hgen.compiler.lowering.targets import TargetProfile

CostModel = Literal["random", "xgb"]
Strategy = Literal["replay-trace", "evolutionary"]
BuilderKind = Literal["in-process", "local"]
KNOWN_GOOD_FFI = "apache-tvm-ffi==0.1.14.post1"
logger = logging.getLogger(__name__)


class TuningDependencyError(CompilerError):
    """A package MetaSchedule needs is missing or broken; the message says what to install."""


@dataclass(frozen=True)
class TuneConfig:
    """How much to tune, kept small by default (2-core host: LeNet-5, 64 trials, about 15 s).

    `trials` is the global budget; `trials_per_task` caps each fused operator so that the budget is spread
    over the tasks instead of being spent on the first ones; `max_tasks` tunes only the N heaviest tasks
    (FLOPs x occurrences). `replay-trace` samples random schedules: with the `random` cost model, TVM's
    default `evolutionary` search found no faster LeNet-5 schedules in 64 trials but took 5-7x longer, so it
    only pays off with `xgb` and large budgets. The `in-process` builder compiles candidates in this process
    (fast, no timeout); `local` compiles each batch in a fresh child process bounded by `builder_timeout_s`
    (isolated, about 4x slower here).
    """

    trials: int = 64
    trials_per_task: int = 8
    trials_per_iter: int = 8
    max_tasks: int | None = None
    cost_model: CostModel = "random"
    strategy: Strategy = "replay-trace"
    builder: BuilderKind = "in-process"
    builder_timeout_s: float = 60.0
    runner_timeout_s: float = 30.0
    work_dir: Path | None = None  # MetaSchedule logs; None = a temporary directory
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("trials", "trials_per_task", "trials_per_iter"):
            if getattr(self, name) < 1:
                raise InvalidArgumentError(f"TuneConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.max_tasks is not None and self.max_tasks < 1:
            raise InvalidArgumentError(f"TuneConfig.max_tasks must be >= 1 or None, got {self.max_tasks}")
        for name, kind in (("cost_model", CostModel), ("strategy", Strategy), ("builder", BuilderKind)):
            if getattr(self, name) not in get_args(kind):
                raise InvalidArgumentError(
                    f"TuneConfig.{name} must be one of {get_args(kind)}, got {getattr(self, name)!r}"
                )
        if self.builder_timeout_s <= 0 or self.runner_timeout_s <= 0:
            raise InvalidArgumentError("TuneConfig timeouts must be > 0 seconds")


def tune_and_compile(mod: Any, profile: TargetProfile, config: TuneConfig) -> Any:
    """Tune `mod`'s fused operators on this host and compile it with the best schedules found.

    Operators left without a measured schedule (budget spent, `max_tasks`) keep their untuned code.
    """
    check_tunable(profile)
    check_dependencies(config.cost_model)
    target = tuning_target(profile)
    with ExitStack() as stack:
        work_dir = config.work_dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hgen-tune-")))
        database = tune(mod, target, config, Path(work_dir))
        return compile_with_database(mod, target, database)


def check_tunable(profile: TargetProfile) -> None:
    """Candidates are timed on this machine, so only profiles for this machine's CPU can be tuned."""
    if not profile.is_host or profile.machine != host_machine():
        raise CompilerError(
            f"MetaSchedule tuning measures candidates on this machine ({host_machine()}); target "
            f"'{profile.name}' ({profile.machine}) cannot be tuned here (no RPC runner); compile it untuned"
        )


def check_dependencies(cost_model: CostModel) -> None:
    """Raise `TuningDependencyError` naming what to install, before anything can crash mid-tuning."""
    import_tvm()
    needed = {"psutil": "psutil", "cloudpickle": "cloudpickle"}  # module -> package to install
    if cost_model == "xgb":
        needed["xgboost"] = "xgboost-cpu"  # the CPU-only wheel; `xgboost` works too
    missing = {module: package for module, package in needed.items() if importlib.util.find_spec(module) is None}
    if missing:
        raise TuningDependencyError(
            f"MetaSchedule tuning needs {', '.join(missing)}: pip install {' '.join(missing.values())}"
        )
    problem = json_serialisation_problem()
    if problem:
        raise TuningDependencyError(problem)


@functools.cache
def json_serialisation_problem() -> str:
    """'' if `tvm.ir.save_json` works on a PrimFunc, else why not; probed in a child process (it may segfault)."""
    probe = (
        "import tvm\nfrom tvm import te\n"
        "a = te.placeholder((4,), name='a')\n"
        "tvm.ir.save_json(te.create_prim_func([a, te.compute((4,), lambda i: a[i] + 1.0)]))\n"
    )
    returncode: int | str
    try:
        returncode = subprocess.run([sys.executable, "-c", probe], capture_output=True, timeout=120).returncode
    except subprocess.TimeoutExpired:
        returncode = "timeout"
    if returncode == 0:
        return ""
    from importlib.metadata import PackageNotFoundError, version

    try:
        ffi = version("apache-tvm-ffi")
    except PackageNotFoundError:
        ffi = "unknown"
    return (
        f"MetaSchedule cannot serialise TIR with apache-tvm-ffi {ffi} (tvm.ir.save_json exited with code "
        f"{returncode}, a crash in tvm::ffi::ToJSONGraph); install a working one: pip install {KNOWN_GOOD_FFI}"
    )


def tuning_target(profile: TargetProfile) -> Any:
    """The profile's target with `num-cores` set: MetaSchedule's CPU rules size parallel loops with it."""
    from tvm.s_tir.meta_schedule.utils import cpu_count

    tvm = import_tvm()
    config = dict(tvm_target(profile).export())
    config.setdefault("num-cores", cpu_count(logical=False))
    return tvm.target.Target(config)


def tune(mod: Any, target: Any, config: TuneConfig, work_dir: Path) -> Any:
    """Extract the fused-operator tasks of `mod` and tune them into an in-memory database."""
    from tvm.s_tir import meta_schedule as ms

    tasks = select_tasks(extract_tasks(mod, target), config.max_tasks)
    contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
        tasks, str(work_dir), strategy=config.strategy, num_threads="physical", seed=config.seed
    )
    database = ms.database.MemoryDatabase()
    try:
        ms.tune_tasks(
            tasks=contexts,
            task_weights=weights,
            work_dir=str(work_dir),
            max_trials_global=config.trials,
            max_trials_per_task=config.trials_per_task,
            num_trials_per_iter=config.trials_per_iter,
            builder=make_builder(config),
            runner=ms.runner.LocalRunner(
                timeout_sec=config.runner_timeout_s,
                evaluator_config=ms.runner.EvaluatorConfig(number=3, repeat=1, min_repeat_ms=20),
            ),
            database=database,
            cost_model=config.cost_model,
        )
    except Exception as exc:  # TVMError and friends from C++
        raise CompilerError(f"MetaSchedule tuning failed (logs in {work_dir / 'logs'}): {exc}") from None
    logger.info("tuned %d task(s) of %s: %d measured candidates", len(contexts), target.kind.name, len(database))
    return database


def extract_tasks(mod: Any, target: Any) -> list[Any]:
    """Legalise and fuse like the default CPU pipeline, then list the TIR functions as tuning tasks."""
    tvm = import_tvm()
    from tvm import relax
    from tvm.s_tir import meta_schedule as ms

    passes = relax.pipeline.library_dispatch_passes(target) + relax.pipeline.legalize_passes(target)
    with target:
        fused = tvm.transform.Sequential(passes)(mod)
    tasks = ms.relax_integration.extract_tasks(fused, target)
    if not tasks:
        raise CompilerError("MetaSchedule found no operator to tune in this module")
    return tasks


def select_tasks(tasks: list[Any], max_tasks: int | None) -> list[Any]:
    """The `max_tasks` heaviest tasks (FLOPs x occurrences), all of them if None."""
    if max_tasks is None or max_tasks >= len(tasks):
        return tasks
    from tvm.s_tir.analysis import estimate_tir_flops

    return sorted(tasks, key=lambda task: estimate_tir_flops(task.dispatched[0]) * task.weight, reverse=True)[
        :max_tasks
    ]


def make_builder(config: TuneConfig) -> Any:
    """The configured candidate builder; TVM's default export puts each candidate in its own temporary
    directory, which MetaSchedule removes once the candidate is measured."""
    from tvm.s_tir import meta_schedule as ms

    if config.builder == "local":
        return ms.builder.LocalBuilder(max_workers=1, timeout_sec=config.builder_timeout_s)
    return in_process_builder()


def in_process_builder() -> Any:
    """A MetaSchedule builder compiling candidates in this process: no pool restart per batch (the local
    builder spawns a fresh Python + TVM for every batch, which dominates tuning time on a small host)."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.builder.local_builder import default_build, default_export

    @derived_object
    class InProcessBuilder(ms.builder.PyBuilder):
        def build(self, build_inputs: list[Any]) -> list[Any]:
            results = []
            for item in build_inputs:
                try:
                    artifact = default_export(default_build(item.mod, item.target, None))
                    results.append(ms.builder.BuilderResult(artifact, None))
                except Exception as exc:  # a candidate that fails to build is a failed trial, not a failed tuning
                    results.append(ms.builder.BuilderResult(None, f"in-process build failed: {exc}"))
            return results

    return InProcessBuilder()


def compile_with_database(mod: Any, target: Any, database: Any) -> Any:
    """Compile with the default CPU passes plus the database's schedules (TVM's relax_integration.compile_relax)."""
    from tvm.s_tir import meta_schedule as ms

    try:
        return ms.relax_integration.compile_relax(database, mod, target, params=None)
    except Exception as exc:
        raise CompilerError(f"TVM compile with tuned schedules for {target.kind.name} failed: {exc}") from None
