"""MLflow tracking and model registry in SQLite under the home directory.

Azure ML model versions are explicit ("3"); MLflow numbers versions itself (1, 2, ...). We
keep our version in the model version tag ``tuneloop_version`` and look versions up by it,
so ``register_model(name, "7")`` followed by ``get_model_version(name, "7")`` finds the
MLflow version that was created for it, whatever number MLflow gave it. Registration is
idempotent on (name, tuneloop_version) and serialised by the home's lock.

mlflow is imported inside the functions: it is heavy and must not load with the app.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared.errors import NotFoundError, PlatformError
from shared.naming import VERSION_TAG
from shared.platform.local.state import Paths

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

__all__ = [
    "VERSION_TAG",
    "client",
    "configure_mlflow",
    "ensure_experiment",
    "ensure_store",
    "find_version",
    "hf_model_dir",
    "log_chat_model",
    "model_local_dir",
    "store_ready",
]

log = logging.getLogger(__name__)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence the deprecation warnings mlflow's own dependencies raise inside mlflow.

    mlflow 3 configures SQLAlchemy 2.1 mappers with deprecated loader strategies and
    alembic/pydantic internals; none is ours to fix, and ``-W error`` must still hold for
    our code, so the filter is scoped to mlflow's modules and calls.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=r"(mlflow|sqlalchemy|alembic)(\..*)?$")
        with contextlib.suppress(ImportError):
            from sqlalchemy.exc import SADeprecationWarning

            warnings.filterwarnings("ignore", category=SADeprecationWarning)
        yield


def store_ready(db: Path) -> bool:
    """Whether ``db`` (``<home>/mlflow.db``) holds an initialised MLflow store: alembic
    stamps ``alembic_version`` last. One read-only SQLite query, mlflow is not imported; the
    one reader of "is the store ready" (:func:`ensure_store`, ``tuneloop doctor``)."""
    if not db.exists():
        return False
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
            row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.Error:
        return False
    return row is not None


def ensure_store(home: Path) -> None:
    """Create the MLflow tracking store in ``<home>/mlflow.db`` once, under a file lock.

    MLflow creates its schema (and runs its migrations) on the first connection to an empty
    database; two processes doing that at once fail (``table datasets already exists``,
    ``duplicate column name``). The platform calls this before it starts a job, and every
    MLflow use here goes through it, so exactly one process creates the schema. Cheap once
    the store exists (one read-only SQLite query; mlflow is not imported).
    """
    paths = Paths(home)
    db = paths.home / "mlflow.db"
    if store_ready(db):
        return
    paths.root.mkdir(parents=True, exist_ok=True)
    with open(paths.root / ".mlflow-init.lock", "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            if store_ready(db):
                return
            with quiet():
                from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

                # After the import: importing mlflow sets its own loggers to INFO.
                for name in ("alembic", "mlflow"):
                    logging.getLogger(name).setLevel(logging.WARNING)
                store = SqlAlchemyStore(  # type: ignore[no-untyped-call]
                    paths.mlflow_uri, paths.mlflow_artifacts.as_uri()
                )
                store.engine.dispose()
            log.info("MLflow tracking store created in %s", db)
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def configure_mlflow(home: Path) -> str:
    """Point mlflow at ``<home>/mlflow.db`` (created once, see :func:`ensure_store`) and keep
    it quiet; returns the tracking URI."""
    import mlflow

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for name in ("alembic", "mlflow"):
        logging.getLogger(name).setLevel(logging.WARNING)
    paths = Paths(home)
    home.mkdir(parents=True, exist_ok=True)
    ensure_store(home)
    uri = paths.mlflow_uri
    with quiet():
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
    return uri


def client(home: Path) -> MlflowClient:
    from mlflow.tracking import MlflowClient

    uri = configure_mlflow(home)
    with quiet():
        return MlflowClient(tracking_uri=uri, registry_uri=uri)


def ensure_experiment(home: Path, name: str) -> str:
    """The experiment's id, created (with artifacts under home) when missing."""
    from mlflow.exceptions import MlflowException

    mlc = client(home)
    with quiet():
        found = mlc.get_experiment_by_name(name)
        if found is not None:
            return str(found.experiment_id)
        location = (Paths(home).mlflow_artifacts / name).as_uri()
        try:
            return str(mlc.create_experiment(name, artifact_location=location))
        except MlflowException:
            # Created concurrently by another process: use theirs.
            found = mlc.get_experiment_by_name(name)
            if found is None:
                raise
            return str(found.experiment_id)


ARTIFACT_KEY = "hf_model"  # = mlmodel.ARTIFACT_KEY (that module imports mlflow on import)


def log_chat_model(model_dir: Path) -> str:
    """Log ``model_dir`` as a pyfunc chat model in the active run; returns its model URI."""
    import mlflow

    code = Path(__file__).with_name("mlmodel.py")
    with quiet():
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(code),
            artifacts={ARTIFACT_KEY: str(model_dir)},
            pip_requirements=_requirements(),
        )
    uri: str = info.model_uri
    return uri


def _requirements() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    reqs = []
    for dist in ("mlflow", "torch", "transformers", "peft", "tokenizers", "safetensors"):
        try:
            reqs.append(f"{dist}=={version(dist)}")
        except PackageNotFoundError:
            continue
    return reqs


def find_version(home: Path, name: str, version: str) -> Any | None:
    """The MLflow ModelVersion registered as our ``name:version``, or None."""
    from mlflow.exceptions import MlflowException

    mlc = client(home)
    safe_name = name.replace("'", "")
    safe_version = version.replace("'", "")
    try:
        with quiet():
            found = mlc.search_model_versions(
                f"name = '{safe_name}' and tags.{VERSION_TAG} = '{safe_version}'"
            )
    except MlflowException as exc:
        raise PlatformError(
            f"cannot search the MLflow registry for {name}:{version}: {exc}"
        ) from exc
    return found[0] if found else None


def versions(home: Path, name: str) -> list[Any]:
    """Every MLflow ModelVersion of the registered model ``name`` (none when it is new)."""
    from mlflow.exceptions import MlflowException

    mlc = client(home)
    safe_name = name.replace("'", "")
    try:
        with quiet():
            return list(mlc.search_model_versions(f"name = '{safe_name}'"))
    except MlflowException as exc:
        raise PlatformError(f"cannot search the MLflow registry for {name}: {exc}") from exc


def register(
    home: Path,
    name: str,
    version: str,
    *,
    model_uri: str,
    run_id: str | None,
    tags: Mapping[str, str],
) -> Any:
    """Create the model version (and the registered model); caller holds the home's lock."""
    from mlflow.exceptions import MlflowException

    existing = find_version(home, name, version)
    if existing is not None:
        return existing
    mlc = client(home)
    all_tags = {**{k: str(v) for k, v in tags.items()}, VERSION_TAG: version}
    with quiet():
        try:
            mlc.get_registered_model(name)
        except MlflowException:
            mlc.create_registered_model(name, tags={"tuneloop": "true"})
        created = mlc.create_model_version(name, source=model_uri, run_id=run_id, tags=all_tags)
    log.info("registered %s:%s as MLflow version %s", name, version, created.version)
    return created


def set_tags(home: Path, name: str, mlflow_version: str, tags: Mapping[str, str]) -> Any:
    """Set ``tags`` on the MLflow model version (others keep theirs: MLflow sets tags one by
    one, a merge); ``tuneloop_version`` is the registry's own key and is never changed here.
    Returns the version as read back."""
    mlc = client(home)
    with quiet():
        for key, value in tags.items():
            if key != VERSION_TAG:
                mlc.set_model_version_tag(name, mlflow_version, key, str(value))
        return mlc.get_model_version(name, mlflow_version)


def model_local_dir(home: Path, name: str, mlflow_version: str) -> Path:
    """The local directory of a registered model version's artifacts (file store)."""
    from urllib.parse import urlparse
    from urllib.request import url2pathname

    mlc = client(home)
    with quiet():
        uri = mlc.get_model_version_download_uri(name, mlflow_version)
    parsed = urlparse(uri)
    if parsed.scheme not in ("", "file"):
        raise NotFoundError(f"model {name} version {mlflow_version} is not in a local store: {uri}")
    return Path(url2pathname(parsed.path))


def hf_model_dir(model_dir: Path) -> Path:
    """The Hugging Face model directory inside a registered version's MLflow model.

    :func:`log_chat_model` logs the trained directory as the pyfunc artifact ``hf_model``;
    MLflow copies it under the model and records where in ``MLmodel``
    (``flavors.python_function.artifacts.hf_model.path``, relative to the model). That is
    what a deployment serves and what a job continuing from the version starts from.
    """
    import yaml

    try:
        meta = yaml.safe_load((model_dir / "MLmodel").read_text(encoding="utf-8")) or {}
        relative = meta["flavors"]["python_function"]["artifacts"][ARTIFACT_KEY]["path"]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
        raise NotFoundError(
            f"{model_dir} is not a tuneloop chat model (no {ARTIFACT_KEY} artifact in its "
            f"MLmodel: {exc})"
        ) from exc
    path = model_dir / str(relative)
    if not (path / "config.json").exists():
        raise NotFoundError(f"model files of {model_dir} are missing: no {path}/config.json")
    return path
