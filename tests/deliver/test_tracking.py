"""The MLflow registry on real stores: SQLite beside the store, and PostgreSQL."""

from __future__ import annotations

import pickle
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelci.deliver.modelspec import Column, ServingSpec
from modelci.deliver.tracking import Registry, build_model_dir, tracking_uri_for
from modelci.settings import Settings

SPEC = ServingSpec(
    loader="pickle",
    artifact="artifacts/model.pkl",
    columns=(Column("x", "double"), Column("color", "string", categories=("blue", "red"))),
    input_example=[{"x": 1.5, "color": "red"}],
    requirements=("scikit-learn==1.5.0",),
)


class Doubler:
    def predict(self, frame: object) -> list[float]:
        return [2 * v for v in frame["x"]]  # type: ignore[index]


@pytest.fixture
def data_dir() -> Iterator[Path]:
    data = Path(tempfile.mkdtemp(prefix="modelci-test-", dir="/var/tmp"))
    try:
        yield data
    finally:
        shutil.rmtree(data, ignore_errors=True)


def model_dir(parent: Path) -> Path:
    path = parent / "model"
    (path / "artifacts").mkdir(parents=True)
    (path / "artifacts" / "model.pkl").write_bytes(pickle.dumps(Doubler()))
    build_model_dir(path, spec=SPEC)
    return path


def exercise(registry: Registry, data_dir: Path, name: str) -> None:
    assert registry.champion(name) is None
    first = registry.log_training(
        name=name,
        repository="acme/churn",
        sha="a" * 40,
        model_dir=model_dir(data_dir / "one"),
        params={"C": 1},
        metrics={"accuracy": 0.9},
    )
    second = registry.log_training(
        name=name,
        repository="acme/churn",
        sha="b" * 40,
        model_dir=model_dir(data_dir / "two"),
        params={"C": 2},
        metrics={"accuracy": 0.95},
    )
    assert (first.version, second.version) == (1, 2)
    assert second.sha == "b" * 40 and second.repository == "acme/churn"
    assert second.metrics == {"accuracy": 0.95}
    registry.set_champion(name, 1)
    champion = registry.champion(name)
    assert champion is not None and champion.version == 1 and "champion" in champion.aliases
    assert ServingSpec.read(champion.model_dir) == SPEC
    registry.set_champion(name, 2)
    listed = registry.list_versions(name)
    assert [(v.version, "champion" in v.aliases) for v in listed] == [(1, False), (2, True)]
    assert name in registry.model_names()
    run = registry.client.get_run(second.run_id or "")
    assert run.data.tags["modelci.sha"] == "b" * 40
    assert run.data.tags["modelci.repository"] == "acme/churn"
    assert run.data.params == {"C": "2"}


def test_registry_on_sqlite_beside_the_store(data_dir: Path) -> None:
    settings = Settings(data_dir=data_dir, database_url=f"sqlite:///{data_dir}/store.db")
    uri = tracking_uri_for(settings, f"sqlite:///{data_dir}/store.db")
    assert uri == f"sqlite:///{data_dir}/store-mlflow.db"
    registry = Registry(uri, data_dir=data_dir)
    exercise(registry, data_dir, "churn")
    artifacts = str(data_dir / "mlflow-artifacts")
    assert str(registry.get_version("churn", 1).model_dir).startswith(artifacts)
    argv = registry.ui_argv(host="127.0.0.1", port=5001)
    assert argv[argv.index("--backend-store-uri") + 1] == uri
    assert argv[argv.index("--default-artifact-root") + 1] == artifacts


def test_registry_on_postgresql(data_dir: Path, postgres_url: str) -> None:
    settings = Settings(data_dir=data_dir, database_url=postgres_url)
    uri = tracking_uri_for(settings, postgres_url)
    assert "_mlflow" in uri
    assert tracking_uri_for(settings, postgres_url) == uri  # the database exists: reused
    exercise(Registry(uri, data_dir=data_dir), data_dir, f"churn-{data_dir.name}")


def test_an_existing_tracking_server_wins(data_dir: Path) -> None:
    settings = Settings(data_dir=data_dir, mlflow_tracking_uri="http://mlflow.internal:5000")
    assert tracking_uri_for(settings, "sqlite:///x.db") == "http://mlflow.internal:5000"


def test_built_model_loads_with_mlflow_pyfunc(data_dir: Path) -> None:
    import mlflow.pyfunc
    import pandas

    path = model_dir(data_dir)
    # Our own pickle, loaded here to prove `mlflow models serve` can use the directory.
    model = mlflow.pyfunc.load_model(str(path))
    frame = pandas.DataFrame([{"x": 1.5, "color": "red"}])
    assert list(model.predict(frame)) == [3.0]
    assert model.metadata.get_input_schema().input_names() == ["x", "color"]
    assert (path / "input_example.json").is_file()
    assert (path / "requirements.txt").read_text().strip() == "scikit-learn==1.5.0"


def test_processes_starting_together_on_a_new_database_make_mlflow_tables_once(
    data_dir: Path, postgres_url: str
) -> None:
    """A server and a worker on a new database (compose's first start): MLflow's
    tables are made under a lock, not by both at once (a UniqueViolation before)."""
    import threading
    import urllib.parse
    import uuid

    import psycopg

    from modelci.deliver import tracking

    name = f"race_{uuid.uuid4().hex[:8]}"
    parts = urllib.parse.urlsplit(postgres_url)
    url = urllib.parse.urlunsplit(parts._replace(path=f"/{name}"))
    settings = Settings(data_dir=data_dir, database_url=url)
    tracking._create_database(parts, f"{name}_mlflow")  # as tracking_uri_for does first
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def first_use() -> None:
        start.wait()
        try:
            # Each thread stands for its own process: no per-process memory of the tables.
            tracking._create_tables.__wrapped__(_mlflow_uri(url))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=first_use) for _ in range(4)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        registry = Registry(tracking_uri_for(settings, url), data_dir=data_dir)
        assert registry.client.search_registered_models() == []
    finally:
        admin = urllib.parse.urlunsplit(parts._replace(scheme="postgresql", path="/postgres"))
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}_mlflow" WITH (FORCE)')


def _mlflow_uri(url: str) -> str:
    import urllib.parse

    parts = urllib.parse.urlsplit(url)
    path = "/" + parts.path.lstrip("/") + "_mlflow"
    return urllib.parse.urlunsplit(parts._replace(scheme="postgresql+psycopg", path=path))
