"""The private Dagster APIs ``notes_pipeline/instance/`` relies on, and the stock fallback.

``PooledPostgresStorage`` and ``PreforkRunLauncher`` (with its ``run_worker_zygote``) use
Dagster internals that may change in any Dagster release: ``dagster._*`` modules, underscore
functions and attributes, and undocumented dagster-postgres helpers. Each test below pins one of
them to exactly what our code does with it (the parameters it fills positionally, the keywords
it passes, the attributes it reads or replaces) and fails with one line naming the symbol, what it
looks like now, the file to update, and the fallback::

    dagster private API changed: dagster._cli.api._execute_run_command_body(run_id, instance,
    write_stream_fn, set_exit_code_on_failure=...) now has (...) (...); update
    notes_pipeline/instance/run_worker_zygote.py or switch to dagster.stock.yaml (docs/INSTANCE.md)

The fallback, ``dagster.stock.yaml``, must stay a working instance config: it is loaded from a
temporary DAGSTER_HOME against the stack's PostgreSQL (the session's Dagster database from
``os.environ``) and launches a real run through ``DefaultRunLauncher`` and a code server.
"""

from __future__ import annotations

import importlib
import inspect
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import launcher_jobs
import pytest
import sqlalchemy
import yaml
from dagster_postgres import (
    DagsterPostgresStorage,
    PostgresEventLogStorage,
    PostgresRunStorage,
    PostgresScheduleStorage,
)
from isolation import dagster_postgres_url

pytestmark = pytest.mark.stack

REPO_ROOT = Path(__file__).resolve().parent.parent
PROJECT_YAML = REPO_ROOT / "dagster.yaml"
STOCK_YAML = REPO_ROOT / "dagster.stock.yaml"
ZYGOTE = "notes_pipeline/instance/run_worker_zygote.py"
LAUNCHER = "notes_pipeline/instance/run_launcher.py"
STORAGE = "notes_pipeline/instance/storage.py"
FALLBACK = "switch to dagster.stock.yaml (docs/INSTANCE.md)"
RUN_TIMEOUT_S = 120
CODE_SERVER_EXIT_S = 30.0
STOCK_LOCATION = "stock_launcher_probe"
# the tag PreforkRunLauncher records (notes_pipeline.instance.run_launcher.RUN_WORKER_PID_TAG);
# spelled out so the stock-fallback tests never import notes_pipeline.instance
RUN_WORKER_PID_TAG = "notes_pipeline/run_worker_pid"
# the keywords PooledPostgresStorage passes to create_pg_engine (storage.POOL_SETTINGS)
POOL_KEYWORDS = ("isolation_level", "pool_size", "max_overflow", "pool_recycle", "pool_pre_ping")


def changed(what: str, now: str, user: str) -> str:
    """The one-line failure message of every private-API check."""
    return f"dagster private API changed: {what} now has {now}; update {user} or {FALLBACK}"


def fail_changed(what: str, now: str, user: str) -> None:
    pytest.fail(changed(what, now, user), pytrace=False)


def resolve(target: str, user: str) -> Any:
    """``"module:Attr.attr"`` -> the object, or a clear failure when it is gone."""
    module_name, _, qualname = target.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in filter(None, qualname.split(".")):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        pytest.fail(
            f"dagster private API changed: {dotted(target)} no longer exists "
            f"({type(exc).__name__}: {exc}); update {user} or {FALLBACK}",
            pytrace=False,
        )
    return obj


def ours(name: str) -> Any:
    """``notes_pipeline.instance.<name>``, or a clear failure when one of its private Dagster
    imports is gone (the module imports them at load time)."""
    try:
        return importlib.import_module(f"notes_pipeline.instance.{name}")
    except ImportError as exc:
        pytest.fail(
            f"dagster private API changed: importing notes_pipeline.instance.{name} fails "
            f"({type(exc).__name__}: {exc}); update notes_pipeline/instance/{name}.py or "
            f"{FALLBACK}",
            pytrace=False,
        )


def dotted(target: str) -> str:
    return target.replace(":", ".").rstrip(".")


class _Default:
    def __repr__(self) -> str:
        return "..."


def shape(sig: inspect.Signature) -> str:
    """A signature as parameter names and kinds only: ``(a, b=..., *, c, **kw)``."""
    params = [
        p.replace(
            annotation=inspect.Parameter.empty,
            default=inspect.Parameter.empty if p.default is inspect.Parameter.empty else _Default(),
        )
        for p in sig.parameters.values()
    ]
    return str(sig.replace(parameters=params, return_annotation=inspect.Signature.empty))


@dataclass(frozen=True)
class Uses:
    """A private callable and exactly how ``user`` calls it."""

    target: str  # "module:qualname"
    user: str  # the file that calls it
    positional: tuple[str, ...] = ()  # parameters our code fills positionally, in this order
    keywords: tuple[str, ...] = ()  # parameters our code passes by keyword
    returns: str | None = None  # the return annotation our code relies on

    @property
    def call(self) -> str:
        args = [*self.positional, *(f"{k}=..." for k in self.keywords)]
        return f"{dotted(self.target)}({', '.join(args)})"


def signature_problems(sig: inspect.Signature, uses: Uses) -> list[str]:
    """What in ``sig`` breaks the call ``uses`` describes (empty: the call still works)."""
    kind = inspect.Parameter
    params = list(sig.parameters.values())
    problems = []
    positional = [
        p.name for p in params if p.kind in (kind.POSITIONAL_ONLY, kind.POSITIONAL_OR_KEYWORD)
    ]
    if positional[: len(uses.positional)] != list(uses.positional):
        problems.append(
            f"positional parameters {positional[: len(uses.positional)]}, "
            f"expected {list(uses.positional)}"
        )
    by_name = {p.name: p for p in params}
    takes_any_keyword = any(p.kind is kind.VAR_KEYWORD for p in params)
    for name in uses.keywords:
        param = by_name.get(name)
        if (param is None and not takes_any_keyword) or (
            param is not None and param.kind not in (kind.POSITIONAL_OR_KEYWORD, kind.KEYWORD_ONLY)
        ):
            problems.append(f"no keyword parameter {name!r}")
    passed = {*uses.positional, *uses.keywords}
    for p in params:
        required = p.default is kind.empty and p.kind not in (kind.VAR_POSITIONAL, kind.VAR_KEYWORD)
        if required and p.name not in passed:
            problems.append(f"new required parameter {p.name!r}")
    if uses.returns is not None:
        annotation = sig.return_annotation
        name = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
        if name != uses.returns:
            problems.append(f"returns {name or annotation!r}, expected {uses.returns}")
    return problems


# Every private callable notes_pipeline/instance/ calls, as it calls it.
CALLS = [
    # run_worker_zygote.execute_run_worker: the body of `dagster api execute_run`
    Uses(
        "dagster._cli.api:_execute_run_command_body",
        ZYGOTE,
        ("run_id", "instance", "write_stream_fn"),
        ("set_exit_code_on_failure",),
        returns="int",
    ),
    Uses("dagster._utils.interrupts:capture_interrupts", ZYGOTE),
    Uses("dagster._serdes:deserialize_value", ZYGOTE, ("val", "as_type")),
    Uses("dagster._core.instance:DagsterInstance.from_ref", ZYGOTE, ("instance_ref",)),
    # PreforkRunLauncher.launch_run / terminate / check_run_worker_health
    Uses(
        "dagster._grpc.types:ExecuteRunArgs",
        LAUNCHER,
        keywords=("job_origin", "run_id", "instance_ref", "set_exit_code_on_failure"),
    ),
    Uses("dagster._grpc.types:ExecuteRunArgs.get_command_args", LAUNCHER, ("self",)),
    Uses("dagster._serdes:serialize_value", LAUNCHER, ("val",)),
    Uses("dagster._check:not_none", LAUNCHER, ("value", "additional_message")),
    Uses(
        "dagster._core.launcher.base:LaunchRunContext",
        LAUNCHER,
        keywords=("dagster_run", "workspace"),
    ),
    Uses(
        "dagster._core.launcher.base:CheckRunHealthResult",
        LAUNCHER,
        ("status", "msg"),
        ("run_worker_id",),
    ),
    Uses("dagster._core.instance:DagsterInstance.get_ref", LAUNCHER, ("self",)),
    Uses(
        "dagster._core.instance:DagsterInstance.add_run_tags",
        LAUNCHER,
        ("self", "run_id", "new_tags"),
    ),
    Uses(
        "dagster._core.instance:DagsterInstance.report_engine_event",
        LAUNCHER,
        ("self", "message", "dagster_run"),
        ("cls",),
    ),
    Uses("dagster._core.instance:DagsterInstance.report_run_canceling", LAUNCHER, ("self", "run")),
    # PooledPostgresStorage
    Uses("dagster._core.storage.config:pg_config", STORAGE),
    Uses(
        "dagster_postgres:DagsterPostgresStorage.__init__",
        STORAGE,
        ("self", "postgres_url", "should_autocreate_tables"),
        ("inst_data",),
    ),
    Uses(
        "dagster_postgres.utils:create_pg_engine",
        STORAGE,
        ("postgres_url", "token_provider"),
        POOL_KEYWORDS,
    ),
    Uses("dagster_postgres.utils:pg_url_from_config", STORAGE, ("config_value",)),
    Uses("dagster_postgres.utils:retry_pg_connection_fn", STORAGE, ("fn",)),
]

# Private names our code imports but only uses as types or base classes (checked further below).
IMPORTED = [
    ("dagster._config.config_schema:UserConfigSchema", LAUNCHER),
    ("dagster._config.config_schema:UserConfigSchema", STORAGE),
    ("dagster._serdes.config_class:ConfigurableClassData", LAUNCHER),
    ("dagster._serdes:ConfigurableClass", LAUNCHER),
    ("dagster._core.launcher.base:RunLauncher", LAUNCHER),
    ("dagster._core.launcher.base:WorkerStatus", LAUNCHER),
]


@pytest.mark.parametrize("uses", CALLS, ids=lambda uses: dotted(uses.target))
def test_private_callable_still_accepts_our_call(uses: Uses):
    obj = resolve(uses.target, uses.user)
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError) as exc:
        fail_changed(uses.call, f"no inspectable signature ({exc})", uses.user)
    problems = signature_problems(sig, uses)
    if problems:
        fail_changed(uses.call, f"{shape(sig)} ({'; '.join(problems)})", uses.user)


@pytest.mark.parametrize("target, user", IMPORTED, ids=[f"{dotted(t)}-{u}" for t, u in IMPORTED])
def test_private_name_still_importable(target: str, user: str):
    resolve(target, user)


def test_the_signature_check_names_what_changed():
    """The checks above fail with the documented message (this pins the message itself)."""

    def reordered(instance, run_id, write_stream_fn, set_exit_code_on_failure, new) -> int:
        raise AssertionError

    uses = CALLS[0]
    sig = inspect.signature(reordered)
    problems = signature_problems(sig, uses)
    assert problems == [
        "positional parameters ['instance', 'run_id', 'write_stream_fn'], "
        "expected ['run_id', 'instance', 'write_stream_fn']",
        "new required parameter 'new'",
    ]
    assert changed(uses.call, shape(sig), uses.user) == (
        "dagster private API changed: dagster._cli.api._execute_run_command_body(run_id, "
        "instance, write_stream_fn, set_exit_code_on_failure=...) now has (instance, run_id, "
        "write_stream_fn, set_exit_code_on_failure, new); update "
        "notes_pipeline/instance/run_worker_zygote.py or switch to dagster.stock.yaml "
        "(docs/INSTANCE.md)"
    )

    def compatible(run_id, instance, write_stream_fn, set_exit_code_on_failure, extra=1) -> int:
        raise AssertionError

    assert signature_problems(inspect.signature(compatible), uses) == []


# ------------------------------------------------------------------ classes we subclass


def override_problems(cls: type, expected: set[str]) -> list[str]:
    """Where ``cls``'s overrides of ``expected`` no longer match its Dagster base classes."""
    problems = []
    if inspect.isabstract(cls):
        problems.append(f"new abstract methods {sorted(cls.__abstractmethods__)}")
    for name in sorted(expected):
        ours = vars(cls)[name]
        base = next((k for k in cls.__mro__[1:] if name in vars(k)), None)
        if base is None:
            problems.append(f"no {name} any more (ours is never called)")
            continue
        theirs = vars(base)[name]
        where = f"{base.__module__}.{base.__qualname__}.{name}"
        if type(theirs) is not type(ours):
            problems.append(f"{where} is a {type(theirs).__name__}, ours a {type(ours).__name__}")
        elif isinstance(ours, classmethod | staticmethod) or inspect.isfunction(ours):
            ours_sig = inspect.signature(getattr(ours, "__func__", ours))
            theirs_sig = inspect.signature(getattr(theirs, "__func__", theirs))
            if list(ours_sig.parameters) != list(theirs_sig.parameters):
                problems.append(f"{where}{shape(theirs_sig)}, ours {name}{shape(ours_sig)}")
    return problems


def test_our_instance_modules_import():
    for name in ("storage", "run_launcher", "run_worker_zygote"):
        ours(name)
    assert tuple(ours("storage").POOL_SETTINGS) == POOL_KEYWORDS
    assert ours("run_launcher").RUN_WORKER_PID_TAG == RUN_WORKER_PID_TAG


def test_prefork_run_launcher_still_fits_run_launcher():
    problems = override_problems(
        ours("run_launcher").PreforkRunLauncher,
        {
            "launch_run",
            "terminate",
            "supports_check_run_worker_health",
            "check_run_worker_health",
            "dispose",
            "inst_data",
            "config_type",
            "from_config_value",
        },
    )
    if problems:
        fail_changed(
            "dagster._core.launcher.base.RunLauncher / dagster._serdes.ConfigurableClass",
            "; ".join(problems),
            LAUNCHER,
        )


def test_pooled_storage_still_fits_dagster_postgres_storage():
    storage_class = ours("storage").PooledPostgresStorage
    problems = override_problems(storage_class, {"config_type", "from_config_value"})
    if problems:
        fail_changed("dagster_postgres.DagsterPostgresStorage", "; ".join(problems), STORAGE)


def test_run_launcher_gets_its_instance_through_register_instance():
    """``self._instance`` (``MayHaveInstanceWeakref``) is how the launcher reaches storage."""
    # no zygote is started until a launch
    launcher = ours("run_launcher").PreforkRunLauncher(preload_modules=["dagster"])
    with dg.DagsterInstance.ephemeral() as instance:
        try:
            launcher.register_instance(instance)
            registered = launcher._instance
        except Exception as exc:  # noqa: BLE001 - any failure means the contract changed
            fail_changed(
                "dagster._core.launcher.base.RunLauncher.register_instance(instance) / ._instance",
                f"{type(exc).__name__}: {exc}",
                LAUNCHER,
            )
        finally:
            launcher.dispose()
    if registered is not instance:
        fail_changed(
            "dagster._core.launcher.base.RunLauncher._instance",
            f"{registered!r} after register_instance",
            LAUNCHER,
        )


def test_worker_status_and_health_result_fields():
    CheckRunHealthResult = resolve("dagster._core.launcher.base:CheckRunHealthResult", LAUNCHER)
    WorkerStatus = resolve("dagster._core.launcher.base:WorkerStatus", LAUNCHER)

    missing = {"RUNNING", "FAILED", "UNKNOWN"} - set(WorkerStatus.__members__)
    if missing:
        fail_changed(
            "dagster._core.launcher.base.WorkerStatus",
            f"members {sorted(WorkerStatus.__members__)} (missing {sorted(missing)})",
            LAUNCHER,
        )
    result = CheckRunHealthResult(WorkerStatus.FAILED, "gone", run_worker_id="42")
    if (result.status, result.msg, result.run_worker_id) != (WorkerStatus.FAILED, "gone", "42"):
        fail_changed(
            "dagster._core.launcher.base.CheckRunHealthResult(status, msg, run_worker_id=...)",
            repr(result),
            LAUNCHER,
        )


def test_dagster_modules_preloaded_by_dagster_yaml_import():
    preload = yaml.safe_load(PROJECT_YAML.read_text())["run_launcher"]["config"]["preload_modules"]
    for name in (m for m in preload if m.split(".")[0] == "dagster"):
        resolve(f"{name}:", "dagster.yaml (run_launcher.config.preload_modules)")


# ------------------------------------------------------------------ the zygote's run path


@pytest.fixture(scope="module")
def sqlite_instance(tmp_path_factory) -> Iterator[dg.DagsterInstance]:
    """A throw-away instance (SQLite storage) with a ref, as the zygote's run workers get."""
    home = tmp_path_factory.mktemp("dagster_home_private_apis")
    (home / "dagster.yaml").write_text(yaml.safe_dump({"telemetry": {"enabled": False}}))
    instance = dg.DagsterInstance.from_config(str(home))
    yield instance
    instance.dispose()


def job_origin():
    return dg.build_reconstructable_job(
        "notes_pipeline_tests.launcher_jobs",
        "job_named",
        reconstructable_args=(launcher_jobs.record_worker_job.name,),
        reconstructor_working_directory=str(REPO_ROOT),
    ).get_python_origin()


def serialized_run_args(instance: dg.DagsterInstance, directory: Path) -> tuple[str, str]:
    """(run id, serialized ExecuteRunArgs) exactly as ``PreforkRunLauncher.launch_run`` builds
    them, for a new run of ``record_worker_job``."""
    ExecuteRunArgs = resolve("dagster._grpc.types:ExecuteRunArgs", LAUNCHER)
    serialize_value = resolve("dagster._serdes:serialize_value", LAUNCHER)
    origin = job_origin()
    run = instance.create_run_for_job(
        job_def=launcher_jobs.record_worker_job,
        run_config={"ops": {"record_worker": {"config": {"directory": str(directory)}}}},
        job_code_origin=origin,
    )
    args = ExecuteRunArgs(
        job_origin=origin,
        run_id=run.run_id,
        instance_ref=instance.get_ref(),
        set_exit_code_on_failure=True,
    )
    return run.run_id, serialize_value(args)


def test_execute_run_args_round_trip_through_the_zygote_protocol(sqlite_instance, tmp_path):
    ExecuteRunArgs = resolve("dagster._grpc.types:ExecuteRunArgs", LAUNCHER)
    deserialize_value = resolve("dagster._serdes:deserialize_value", ZYGOTE)
    run_id, serialized = serialized_run_args(sqlite_instance, tmp_path)
    args = deserialize_value(serialized, ExecuteRunArgs)
    got = (args.run_id, args.set_exit_code_on_failure, args.instance_ref, args.job_origin)
    want = (run_id, True, sqlite_instance.get_ref(), job_origin())
    if got != want:
        fail_changed(
            "dagster._serdes round trip of dagster._grpc.types.ExecuteRunArgs",
            f"{got!r}, expected {want!r}",
            LAUNCHER,
        )
    if args.job_origin.executable_path != want[3].executable_path:
        fail_changed("JobPythonOrigin.executable_path", repr(args.job_origin), LAUNCHER)
    command = list(args.get_command_args())
    if command[-3:] != ["api", "execute_run", serialized]:
        fail_changed(
            "dagster._grpc.types.ExecuteRunArgs.get_command_args() -> [..., 'api', "
            "'execute_run', <args>]",
            repr(command[:-1] + ["<args>"]),
            LAUNCHER,
        )


@pytest.fixture
def restore_signal_handlers() -> Iterator[None]:
    """capture_interrupts() leaves SIGTERM mapped to the SIGINT handler; undo that."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def test_capture_interrupts_turns_sigterm_into_a_captured_interrupt(restore_signal_handlers):
    """``PreforkRunLauncher.terminate`` sends SIGTERM; inside ``capture_interrupts`` Dagster must
    handle it like SIGINT (captured, then a clean cancellation at the next step boundary)."""
    capture_interrupts = resolve("dagster._utils.interrupts:capture_interrupts", ZYGOTE)
    default = signal.getsignal(signal.SIGINT)
    with capture_interrupts():
        sigint, sigterm = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    if sigint is default or sigterm is not sigint:
        fail_changed(
            "dagster._utils.interrupts.capture_interrupts() (SIGTERM handled as captured SIGINT)",
            f"SIGINT -> {sigint!r}, SIGTERM -> {sigterm!r}",
            ZYGOTE,
        )


def test_the_zygote_run_body_runs_a_job_and_reports_failure_as_exit_code(
    sqlite_instance, tmp_path, restore_signal_handlers
):
    """``execute_run_worker`` in this process (no fork): 0 and SUCCESS, then 1 and FAILURE."""
    execute_run_worker = ours("run_worker_zygote").execute_run_worker
    run_id, serialized = serialized_run_args(sqlite_instance, tmp_path)
    code = execute_run_worker(serialized)
    run = sqlite_instance.get_run_by_id(run_id)
    if (code, run.status) != (0, dg.DagsterRunStatus.SUCCESS):
        fail_changed(
            "dagster._cli.api._execute_run_command_body(...) for a succeeding run",
            f"exit code {code}, run status {run.status.value}",
            ZYGOTE,
        )
    assert (tmp_path / "worker.txt").read_text().split()[0] == str(os.getpid())

    run_id, serialized = serialized_run_args(sqlite_instance, tmp_path / "missing" / "dir")
    code = execute_run_worker(serialized)
    run = sqlite_instance.get_run_by_id(run_id)
    if (code, run.status) != (1, dg.DagsterRunStatus.FAILURE):
        fail_changed(
            "dagster._cli.api._execute_run_command_body(..., set_exit_code_on_failure=True) "
            "for a failing run",
            f"exit code {code}, run status {run.status.value}",
            ZYGOTE,
        )


# ------------------------------------------------------------------ the pooled storage


def recorder(into: list[object]) -> Callable[..., None]:
    """A SQLAlchemy event listener that appends its first argument to ``into``."""
    return lambda first, *_: into.append(first)


def test_schema_probes_we_remember_still_take_positional_arguments():
    """``PooledPostgresStorage`` wraps each of ``storage.SCHEMA_PROBES`` in a cache keyed on
    positional arguments: every probe must exist on dagster-postgres' storage and take no
    keyword-only parameter."""
    classes = {
        "_run_storage": PostgresRunStorage,
        "_event_log_storage": PostgresEventLogStorage,
        "_schedule_storage": PostgresScheduleStorage,
    }
    for attr, probes in ours("storage").SCHEMA_PROBES.items():
        for name in probes:
            where = f"{classes[attr].__module__}.{classes[attr].__qualname__}.{name}"
            method = getattr(classes[attr], name, None)
            if not callable(method):
                fail_changed(where, f"{method!r} (not a method)", STORAGE)
            kinds = {p.kind for p in inspect.signature(method).parameters.values()}
            if kinds - {inspect.Parameter.POSITIONAL_OR_KEYWORD}:
                fail_changed(where, f"{name}{inspect.signature(method)}", STORAGE)


def test_pooled_storage_replaces_the_engines_dagster_postgres_uses():
    """The three storages live in the private attributes we patch, every call goes through
    their ``_engine``, and the instance reaches them through the public properties."""
    storage = ours("storage").PooledPostgresStorage(dagster_postgres_url())
    calls: dict[str, Callable[[], object]] = {
        "_run_storage": lambda: storage.run_storage.get_runs(limit=1),
        "_event_log_storage": lambda: storage.event_log_storage.get_logs_for_run("no-such-run"),
        "_schedule_storage": lambda: storage.schedule_storage.all_instigator_state(),
    }
    public = {
        "_run_storage": "run_storage",
        "_event_log_storage": "event_log_storage",
        "_schedule_storage": "schedule_storage",
    }
    try:
        for attr, call in calls.items():
            what = f"dagster_postgres.DagsterPostgresStorage.{attr}._engine"
            inner = getattr(storage, attr, None)
            engine = getattr(inner, "_engine", None)
            if not isinstance(engine, sqlalchemy.engine.Engine):
                fail_changed(what, f"{attr} = {inner!r}, _engine = {engine!r}", STORAGE)
            if getattr(storage, public[attr]) is not inner:
                fail_changed(
                    f"dagster_postgres.DagsterPostgresStorage.{public[attr]}",
                    f"{getattr(storage, public[attr])!r}, not the object in {attr}",
                    STORAGE,
                )
            if not isinstance(engine.pool, sqlalchemy.pool.QueuePool) or engine.pool.size() != 1:
                fail_changed(what, f"pool {engine.pool!r} after PooledPostgresStorage()", STORAGE)
            checkouts: list[object] = []
            sqlalchemy.event.listen(engine, "checkout", recorder(checkouts))
            call()
            if not checkouts:
                fail_changed(
                    f"{type(inner).__module__}.{type(inner).__qualname__} connecting through "
                    "_engine",
                    "connections that bypass _engine (the pool is never used)",
                    STORAGE,
                )
    finally:
        for attr in calls:
            engine = getattr(getattr(storage, attr, None), "_engine", None)
            if engine is not None:
                engine.dispose()


# ------------------------------------------------------------------ the stock fallback


def test_stock_yaml_is_dagster_yaml_without_the_private_parts():
    """Same queue, backfills, run monitoring, logs, telemetry and database; only `storage`
    (plain dagster-postgres) and `run_launcher` (DefaultRunLauncher) differ, and the stock file
    has no `instance_class` (Dagster's 30-s backfill loop)."""
    project = yaml.safe_load(PROJECT_YAML.read_text())
    stock = yaml.safe_load(STOCK_YAML.read_text())
    private = {"storage", "run_launcher", "instance_class", "backfill_daemon_interval_seconds"}
    assert "instance_class" in project
    assert not {"instance_class", "backfill_daemon_interval_seconds"} & set(stock)
    shared = (set(project) | set(stock)) - private
    assert {key: stock.get(key) for key in shared} == {key: project.get(key) for key in shared}
    assert stock["storage"] == {"postgres": project["storage"]["custom"]["config"]}
    assert stock["storage"]["postgres"]["postgres_db"]["scheme"] == "postgresql+psycopg2"
    assert stock["run_launcher"] == {
        "module": "dagster.core.launcher",
        "class": "DefaultRunLauncher",
    }
    modules = [section.get("module", "") for section in stock.values() if isinstance(section, dict)]
    assert not [m for m in modules if m.startswith("notes_pipeline") or "._" in m], modules


@pytest.fixture(scope="module")
def stock_instance(tmp_path_factory) -> Iterator[dg.DagsterInstance]:
    """The instance an operator gets after copying dagster.stock.yaml to $DAGSTER_HOME."""
    home = tmp_path_factory.mktemp("dagster_home_stock")
    shutil.copyfile(STOCK_YAML, home / "dagster.yaml")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("DAGSTER_HOME", str(home))
        try:
            instance = dg.DagsterInstance.get()
        except dg.DagsterInvalidConfigError as exc:
            pytest.fail(
                f"dagster.stock.yaml is not a valid instance config for dagster "
                f"{dg.__version__}: {exc}",
                pytrace=False,
            )
        try:
            yield instance
        finally:
            instance.dispose()


def test_stock_instance_uses_only_stock_parts(stock_instance):
    assert type(stock_instance) is dg.DagsterInstance
    assert type(stock_instance.run_launcher) is dg.DefaultRunLauncher
    assert type(stock_instance.run_storage) is PostgresRunStorage
    assert type(stock_instance.event_log_storage) is PostgresEventLogStorage
    assert type(stock_instance.schedule_storage) is PostgresScheduleStorage
    ref = stock_instance.get_ref()  # what every run worker rebuilds its instance from
    assert (ref.storage_data.module_name, ref.storage_data.class_name) == (
        DagsterPostgresStorage.__module__.split(".")[0],
        "DagsterPostgresStorage",
    )
    assert isinstance(stock_instance.run_coordinator, dg.QueuedRunCoordinator)
    queue = stock_instance.get_concurrency_config().run_queue_config
    project_queue = yaml.safe_load(PROJECT_YAML.read_text())["run_coordinator"]["config"]
    assert queue.max_concurrent_runs == project_queue["max_concurrent_runs"]
    assert queue.tag_concurrency_limits == project_queue["tag_concurrency_limits"]
    assert stock_instance.run_monitoring_enabled
    assert stock_instance.run_monitoring_poll_interval_seconds == 30


def code_server_pids(location_name: str) -> list[int]:
    """PIDs of this process's children that serve ``location_name`` (``dagster api grpc``)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == os.getpid() and b"grpc" in argv and location_name.encode() in argv:
            pids.append(int(entry.name))
    return pids


def running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_for_exit(pids: list[int], what: str) -> None:
    """Wait (bounded) until every pid has exited; SIGTERM the rest and fail."""
    deadline = time.monotonic() + CODE_SERVER_EXIT_S
    while any(running(pid) for pid in pids):
        if time.monotonic() > deadline:
            alive = [pid for pid in pids if running(pid)]
            for pid in alive:
                os.kill(pid, signal.SIGTERM)
            pytest.fail(f"{what} {alive} still running {CODE_SERVER_EXIT_S} s after shutdown")
        time.sleep(0.05)


def test_stock_instance_launches_a_run_with_the_default_run_launcher(stock_instance, tmp_path):
    """A real launch: a code server for ``record_worker_job``, ``instance.launch_run`` (what the
    queue daemon does on dequeue), the run worker a new interpreter started by the code server,
    its events in the stock PostgreSQL storage.

    The code server is waited for: it reads the run's storage once more while shutting down, and
    must not outlive the session's database (it would hang on it)."""
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import WorkspaceFileTarget

    job = launcher_jobs.record_worker_job
    workspace_yaml = tmp_path / "workspace.yaml"
    location = {
        "module_name": "notes_pipeline_tests.launcher_jobs",
        "attribute": job.name,
        "working_directory": str(REPO_ROOT),
        "location_name": STOCK_LOCATION,
    }
    workspace_yaml.write_text(yaml.safe_dump({"load_from": [{"python_module": location}]}))
    target = WorkspaceFileTarget(paths=[str(workspace_yaml)])
    servers: list[int] = []
    with WorkspaceProcessContext(stock_instance, target) as workspace:
        servers.extend(code_server_pids(STOCK_LOCATION))
        request = workspace.create_request_context()
        assert not request.code_location_errors(), request.code_location_errors()
        (repository,) = request.get_code_location(STOCK_LOCATION).get_repositories().values()
        remote_job = repository.get_full_job(job.name)
        run = stock_instance.create_run_for_job(
            job_def=job,
            run_config={"ops": {"record_worker": {"config": {"directory": str(tmp_path)}}}},
            remote_job_origin=remote_job.get_remote_origin(),
            job_code_origin=remote_job.get_python_origin(),
        )
        try:
            stock_instance.launch_run(run.run_id, request)
            stock_instance.run_launcher.join(timeout=RUN_TIMEOUT_S)
            run = stock_instance.get_run_by_id(run.run_id)
            assert run.status == dg.DagsterRunStatus.SUCCESS
            worker_pid, parent_pid = map(int, (tmp_path / "worker.txt").read_text().split())
            assert parent_pid != os.getpid()  # started by the code server, not forked by us
            assert RUN_WORKER_PID_TAG not in run.tags
            started = [
                e.message
                for e in stock_instance.all_logs(
                    run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT
                )
                if "Started process for run" in (e.message or "")
            ]
            assert started == [f"Started process for run (pid: {worker_pid})."]
        finally:
            stock_instance.delete_run(run.run_id)
    assert servers, "no code server process found for the workspace"
    wait_for_exit(servers, "code server")
