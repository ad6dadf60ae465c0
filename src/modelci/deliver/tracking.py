"""MLflow: where trained versions are recorded, registered and given the champion alias.

The only module that imports mlflow, and only inside functions: importing it
takes seconds and most commands never need it. Its tracking and registry store
lives beside modelci's own: a ``<name>_mlflow`` database on the same PostgreSQL
server, or a sibling SQLite file; artifacts go under ``<data_dir>/mlflow-artifacts``.
``MODELCI_MLFLOW_TRACKING_URI`` points at an existing MLflow server instead.

Model directories are built here from files modelci has already copied out of
the sandbox: the repository's pickle is never unpickled in this process, so the
MLflow model's pyfunc flavor loads it through a tiny loader module, and the
signature comes from the configuration and the training data, not the object.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
import os
import shutil
import sys
import threading
import urllib.parse
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from modelci.deliver.modelspec import (
    DELIVERY_KEY_TAG,
    SERVING_SPEC_FILE,
    ModelVersion,
    ServingSpec,
)
from modelci.errors import StoreError
from modelci.settings import Settings

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion as MlflowVersion
    from mlflow.tracking import MlflowClient

__all__ = ["CHAMPION", "Registry", "build_model_dir", "tracking_uri_for"]

_MLFLOW_IMPORT = threading.Lock()


def _import_mlflow() -> None:
    """Import mlflow whole, once, under a lock.

    mlflow's package imports are circular: two threads importing parts of it at
    once (a delivery job and the serving API's registry poll) get a partially
    initialised module and an AttributeError.
    """
    with _MLFLOW_IMPORT:
        import mlflow  # noqa: F401


CHAMPION = "champion"
_DELIVERY_KEY = DELIVERY_KEY_TAG
_LOADER_MODULE = "modelci_pyfunc"
# The pyfunc loader: `mlflow models serve` and mlflow.pyfunc.load_model use it;
# modelci's own serving reads modelci-serving.json and never imports mlflow.
_LOADER_SOURCE = """\
import importlib
import json
import os
import sys


class _Model:
    def __init__(self, model, method):
        self.model, self.method = model, method

    def predict(self, data, params=None):
        return getattr(self.model, self.method)(data)


def _model_root(path):
    # From the data path MLflow passes, not this module's __file__: the module is
    # imported once per process, and a second model would read the first's files.
    here = os.path.abspath(path)
    while not os.path.isfile(os.path.join(here, "modelci-serving.json")):
        if os.path.dirname(here) == here:
            raise FileNotFoundError(f"no modelci-serving.json above {path}")
        here = os.path.dirname(here)
    return here


def _load_pyfunc(path):
    root = _model_root(path)
    with open(os.path.join(root, "modelci-serving.json")) as f:
        spec = json.load(f)
    for code in spec.get("code_paths") or ():
        sys.path.insert(0, os.path.join(root, code))
    # Another model's loader of the same name may be imported already: use this one's.
    sys.modules.pop(spec["loader"], None)
    loader = importlib.import_module(spec["loader"])
    with open(os.path.join(root, spec["artifact"]), "rb") as f:
        return _Model(loader.load(f), spec.get("method", "predict"))
"""


def tracking_uri_for(settings: Settings, database_url: str) -> str:
    """MLflow's store for modelci's database; the PostgreSQL database is created if missing."""
    if settings.mlflow_tracking_uri:
        return settings.mlflow_tracking_uri
    parts = urllib.parse.urlsplit(database_url)
    if parts.scheme.startswith("sqlite"):
        path = Path(parts.path[1:] if parts.path.startswith("//") else parts.path)
        path = Path("/" + parts.path.lstrip("/")) if parts.path.startswith("//") else path
        if not parts.path or parts.path in ("/", "/:memory:"):
            return f"sqlite:///{settings.data_dir / 'mlflow.db'}"
        return f"sqlite:///{path.with_name(path.stem + '-mlflow.db')}"
    if parts.scheme.startswith("postgres"):
        database = parts.path.lstrip("/") + "_mlflow"
        _create_database(parts, database)
        scheme = "postgresql+psycopg"
        uri = urllib.parse.urlunsplit(parts._replace(scheme=scheme, path="/" + database))
        _create_tables(uri)
        return uri
    raise StoreError(
        f"MLflow cannot share the database {parts.scheme}://…",
        hint="use PostgreSQL or SQLite for MODELCI_DATABASE_URL, or set "
        "MODELCI_MLFLOW_TRACKING_URI to an MLflow server",
    )


def _create_database(parts: urllib.parse.SplitResult, database: str) -> None:
    import psycopg
    from psycopg import sql

    admin = urllib.parse.urlunsplit(parts._replace(scheme="postgresql", path="/postgres"))
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
            found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
            if found.fetchone() is None:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    except (psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation):
        # Created by a concurrent process (or thread: the first drift check and the
        # first delivery of a new server): two CREATE DATABASE at once collide on the
        # catalog's unique index rather than report the duplicate.
        pass
    except psycopg.Error as exc:
        raise StoreError(
            f"cannot create MLflow's database {database}: {str(exc).strip()}",
            hint="grant the database role CREATEDB, create the database by hand, or set "
            "MODELCI_MLFLOW_TRACKING_URI",
        ) from None


# pg_advisory_lock key held while MLflow's tables are made (any constant of our own).
_MLFLOW_TABLES_LOCK = 0x6D6C666C6F77  # "mlflow"


@functools.cache
def _create_tables(uri: str) -> None:
    """Make MLflow's tables on a new database, under an advisory lock on that server.

    MLflow makes them on first use without a lock PostgreSQL sees (its own lock is
    a file in this machine's /tmp): a server and a worker starting together on a
    new database, each in its own container, both ran CREATE TABLE and one failed
    on the catalog's unique index. Once per process and URI: later, a look at the
    table names."""
    _import_mlflow()
    import sqlalchemy
    from mlflow.store.db import utils
    from sqlalchemy.pool import NullPool

    engine = sqlalchemy.create_engine(uri, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            # Session-level, so MLflow's own transactions on other connections run inside it.
            connection.exec_driver_sql(f"SELECT pg_advisory_lock({_MLFLOW_TABLES_LOCK})")
            try:
                if not utils._all_tables_exist(engine):  # type: ignore[no-untyped-call]
                    utils._initialize_tables(engine)  # type: ignore[no-untyped-call]
            finally:
                connection.exec_driver_sql(f"SELECT pg_advisory_unlock({_MLFLOW_TABLES_LOCK})")
    except sqlalchemy.exc.SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        raise StoreError(
            f"cannot make MLflow's tables: {reason[0] if reason else type(exc).__name__}",
            hint="check that the database role may create tables in MLflow's database, or "
            "set MODELCI_MLFLOW_TRACKING_URI to an MLflow server",
        ) from None
    finally:
        engine.dispose()


def build_model_dir(
    dest: Path, *, spec: ServingSpec, columns_example: list[dict[str, Any]] | None = None
) -> None:
    """Turn dest (holding spec.artifact and code) into an MLflow model: MLmodel, signature,
    input example, requirements, and modelci-serving.json."""
    _import_mlflow()
    import mlflow.pyfunc
    from mlflow.models import Model, ModelSignature
    from mlflow.types import ColSpec, DataType, Schema

    spec.write(dest)
    loader_dir = dest / "modelci-loader"
    loader_dir.mkdir(exist_ok=True)
    (loader_dir / f"{_LOADER_MODULE}.py").write_text(_LOADER_SOURCE)
    (dest / "requirements.txt").write_text("\n".join(spec.requirements) + "\n")
    model = Model()
    inputs = [
        ColSpec(DataType[column.type], column.name, required=column.required)
        for column in spec.columns
    ]
    if inputs:
        model.signature = ModelSignature(inputs=Schema(inputs))  # type: ignore[arg-type]
    mlflow.pyfunc.add_to_model(
        model,
        loader_module=_LOADER_MODULE,
        code="modelci-loader",
        data=spec.artifact,
        env={"virtualenv": "requirements.txt"},
    )
    example = columns_example if columns_example is not None else spec.input_example
    if example:
        # MLflow's own layout for a DataFrame example (orient "split"), which its UI shows.
        columns = list(example[0])
        rows = [[record.get(c) for c in columns] for record in example]
        (dest / "input_example.json").write_text(json.dumps({"columns": columns, "data": rows}))
        model.saved_input_example_info = {
            "artifact_path": "input_example.json",
            "type": "dataframe",
            "pandas_orient": "split",
        }
    model.save(str(dest / "MLmodel"))


def _local_path(uri: str) -> Path | None:
    if uri.startswith("file://"):
        return Path(urllib.parse.unquote(urllib.parse.urlsplit(uri).path))
    if uri.startswith("/"):
        return Path(uri)
    return None


F = TypeVar("F", bound=Callable[..., Any])


def _mlflow_errors(method: F) -> F:
    """MLflow's own failures (server down, store unreachable) as modelci's StoreError."""

    @functools.wraps(method)
    def wrapper(self: Registry, *args: Any, **kwargs: Any) -> Any:
        _import_mlflow()
        from mlflow.exceptions import MlflowException

        try:
            return method(self, *args, **kwargs)
        except MlflowException as exc:
            raise StoreError(
                f"MLflow ({_hide_password(self.tracking_uri)}) failed: {exc.message[:500]}",
                hint="check that the tracking store is reachable (MODELCI_MLFLOW_TRACKING_URI "
                "or modelci's database) and retry",
            ) from None

    return wrapper  # type: ignore[return-value]


class Registry:
    """The registry modelci delivers into, on MLflow; implements modelspec.ModelRegistry."""

    def __init__(self, tracking_uri: str, *, data_dir: Path) -> None:
        self.tracking_uri = tracking_uri
        self.artifacts_dir = data_dir / "mlflow-artifacts"
        self.cache_dir = data_dir / "mlflow-cache"
        self._client: MlflowClient | None = None

    @classmethod
    def from_settings(cls, settings: Settings, database_url: str) -> Registry:
        return cls(tracking_uri_for(settings, database_url), data_dir=settings.data_dir)

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
            _import_mlflow()
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(
                tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri
            )
        return self._client

    def ui_argv(self, *, host: str, port: int) -> list[str]:
        """``mlflow ui`` on this registry's store and artifacts (for ``modelci mlflow-ui``;
        holds the password of the store's URL: never print it)."""
        return [
            sys.executable,
            "-m",
            "mlflow",
            "ui",
            "--backend-store-uri",
            self.tracking_uri,
            "--default-artifact-root",
            str(self.artifacts_dir),
            "--host",
            host,
            "--port",
            str(port),
        ]

    def _experiment(self, name: str) -> str:
        title = f"modelci/{name}"
        found = self.client.get_experiment_by_name(title)
        if found is not None:
            return str(found.experiment_id)
        if self.tracking_uri.startswith(("http://", "https://", "databricks")):
            return str(self.client.create_experiment(title))  # the server's artifact store
        location = self.artifacts_dir / name
        location.mkdir(parents=True, exist_ok=True)
        return str(self.client.create_experiment(title, artifact_location=location.as_uri()))

    @_mlflow_errors
    def log_training(
        self,
        *,
        name: str,
        repository: str,
        sha: str,
        model_dir: Path,
        params: Mapping[str, Any],
        metrics: Mapping[str, float],
        tags: Mapping[str, str] | None = None,
        log_path: Path | None = None,
        delivery_key: str | None = None,
        version_tags: Mapping[str, str] | None = None,
    ) -> ModelVersion:
        """One MLflow run for one trained commit, its model registered as a new version;
        ``delivery_key`` (see ``find_delivered``) and ``version_tags`` are kept as the
        version's tags."""
        _import_mlflow()
        from mlflow.entities import Metric, Param

        client = self.client
        self._ensure_model(name, repository)
        run = client.create_run(
            self._experiment(name),
            run_name=sha[:12],
            tags={
                "modelci.sha": sha,
                "modelci.repository": repository,
                "mlflow.source.git.commit": sha,
                **(tags or {}),
            },
        )
        run_id = run.info.run_id
        try:
            now = int(dt.datetime.now(dt.UTC).timestamp() * 1000)
            client.log_batch(
                run_id,
                metrics=[Metric(k, float(v), now, 0) for k, v in sorted(metrics.items())],
                params=[Param(str(k)[:250], str(v)[:6000]) for k, v in sorted(params.items())],
            )
            if log_path is not None and log_path.is_file():
                client.log_artifact(run_id, str(log_path), "logs")
            client.log_artifacts(run_id, str(model_dir), "model")
        except BaseException:
            client.set_terminated(run_id, "FAILED")
            raise
        client.set_terminated(run_id, "FINISHED")
        source = f"{run.info.artifact_uri}/model"
        version = client.create_model_version(
            name,
            source=source,
            run_id=run_id,
            tags={
                "modelci.sha": sha,
                "modelci.repository": repository,
                **({_DELIVERY_KEY: delivery_key} if delivery_key else {}),
                **(version_tags or {}),
            },
        )
        return self.get_version(name, int(version.version))

    @_mlflow_errors
    def set_version_tags(self, name: str, version: int, tags: Mapping[str, str]) -> None:
        """Add tags to a registered version (a retrain's scores, once both are known)."""
        for key, value in sorted(tags.items()):
            self.client.set_model_version_tag(name, str(version), key, value)

    @_mlflow_errors
    def find_delivered(self, name: str, delivery_key: str) -> ModelVersion | None:
        """The newest version registered under ``delivery_key`` (a commit, environment and
        configuration), or None: delivering that again reuses it instead of a new version."""
        found = [
            item
            for item in self.client.search_model_versions(f"name = '{_quote(name)}'")
            if (item.tags or {}).get(_DELIVERY_KEY) == delivery_key
        ]
        if not found:
            return None
        return self._version(max(found, key=lambda item: int(item.version)), download=False)

    def _ensure_model(self, name: str, repository: str) -> None:
        _import_mlflow()
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(name)
        except MlflowException:
            try:
                self.client.create_registered_model(name, tags={"modelci.repository": repository})
            except MlflowException:
                self.client.get_registered_model(name)  # a concurrent create won

    @_mlflow_errors
    def model_names(self) -> list[str]:
        names = [model.name for model in self.client.search_registered_models()]
        return sorted(names)

    @_mlflow_errors
    def list_versions(self, name: str) -> list[ModelVersion]:
        found = self.client.search_model_versions(f"name = '{_quote(name)}'")
        champion = self._champion_number(name)
        versions = []
        for item in found:
            version = self._version(item, download=False)
            if version.version == champion and CHAMPION not in version.aliases:
                version = dataclasses.replace(version, aliases=(*version.aliases, CHAMPION))
            versions.append(version)
        return sorted(versions, key=lambda v: v.version)

    def _champion_number(self, name: str) -> int | None:
        _import_mlflow()
        from mlflow.exceptions import MlflowException

        try:
            return int(self.client.get_model_version_by_alias(name, CHAMPION).version)
        except MlflowException:
            return None

    @_mlflow_errors
    def get_version(self, name: str, version: int) -> ModelVersion:
        _import_mlflow()
        from mlflow.exceptions import MlflowException

        try:
            found = self.client.get_model_version(name, str(version))
        except MlflowException:
            raise StoreError(
                f"model {name} has no version {version}",
                hint=f"list the versions with: modelci models show {name}",
            ) from None
        return self._version(found, download=True)

    @_mlflow_errors
    def champion(self, name: str) -> ModelVersion | None:
        _import_mlflow()
        from mlflow.exceptions import MlflowException

        try:
            found = self.client.get_model_version_by_alias(name, CHAMPION)
        except MlflowException:
            return None
        return self._version(found, download=True)

    @_mlflow_errors
    def set_champion(self, name: str, version: int) -> None:
        self.get_version(name, version)  # a clear error for a version that does not exist
        self.client.set_registered_model_alias(name, CHAMPION, str(version))

    def _version(self, found: MlflowVersion, *, download: bool) -> ModelVersion:
        version = int(found.version)
        metrics: dict[str, float] = {}
        tags = dict(found.tags or {})
        if found.run_id:
            run = self.client.get_run(found.run_id)
            metrics = dict(run.data.metrics)
            tags = {**run.data.tags, **tags}
        source = str(found.source)
        model_dir = _local_path(source)
        if download and (model_dir is None or not model_dir.is_dir()):
            model_dir = self._download(found.name, version, source)
        return ModelVersion(
            name=found.name,
            version=version,
            model_dir=model_dir or Path(source),
            run_id=found.run_id,
            sha=tags.get("modelci.sha"),
            repository=tags.get("modelci.repository"),
            metrics=metrics,
            trained_at=dt.datetime.fromtimestamp(found.creation_timestamp / 1000, dt.UTC),
            aliases=tuple(found.aliases or ()),
            tags={str(k): str(v) for k, v in tags.items() if not str(k).startswith("mlflow.")},
        )

    def _download(self, name: str, version: int, source: str) -> Path:
        _import_mlflow()
        import mlflow.artifacts

        target = self.cache_dir / name / str(version)
        if (target / SERVING_SPEC_FILE).is_file():
            return target
        staging = target.with_name(f"{version}.tmp{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        got = mlflow.artifacts.download_artifacts(
            artifact_uri=source, dst_path=str(staging), tracking_uri=self.tracking_uri
        )
        shutil.rmtree(target, ignore_errors=True)
        Path(got).rename(target)
        shutil.rmtree(staging, ignore_errors=True)
        return target


def _quote(name: str) -> str:
    return name.replace("\\", "\\\\").replace("'", "\\'")


def _hide_password(uri: str) -> str:
    parts = urllib.parse.urlsplit(uri)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    return uri


def read_mlflow_run(store: Path) -> dict[str, Any]:
    """The newest run of a file store that the repository's training wrote (already copied
    out of the sandbox): its params, metrics and the local directory of its logged model."""
    try:
        return _read_mlflow_run(store)
    except StoreError:
        raise
    except Exception as exc:  # the repository wrote every byte of that store
        raise StoreError(
            f"the MLflow run the training logged cannot be read: {str(exc)[:500]}",
            hint="log with the mlflow client as usual; do not edit its files by hand",
        ) from None


def _read_mlflow_run(store: Path) -> dict[str, Any]:
    _import_mlflow()
    from mlflow.tracking import MlflowClient

    # MLflow 3 refuses file stores unless allowed; modelci only reads this one.
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    client = MlflowClient(tracking_uri=store.as_uri())
    experiments = client.search_experiments()
    runs = client.search_runs(
        [e.experiment_id for e in experiments], order_by=["attributes.start_time DESC"]
    )
    if not runs:
        raise StoreError(
            "the training logged no MLflow run",
            hint="call mlflow.start_run() and log the model (the tracking URI is set for you)",
        )
    run = runs[0]
    candidates = sorted(store.rglob("MLmodel"), key=lambda p: p.stat().st_mtime, reverse=True)
    mine = [p for p in candidates if run.info.run_id in _read_text(p)] or candidates
    if not mine:
        raise StoreError(
            "the training's MLflow run has no logged model",
            hint="log it with mlflow.sklearn.log_model(model, name='model', "
            "serialization_format='cloudpickle')",
        )
    return {
        "params": dict(run.data.params),
        "metrics": dict(run.data.metrics),
        "model_dir": mine[0].parent,
        "run_id": run.info.run_id,
    }


def _read_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""
