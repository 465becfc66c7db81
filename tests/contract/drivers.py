"""The implementations of the platform port behind one driver interface, for the contract suite.

A :class:`Driver` is the adapter itself plus the few hooks a contract test needs that the port
does not offer (make a job finish, tell whether something was created anew, wait for a platform
that settles on its own time). :class:`AzureMLDriver` runs the real SDK against
:class:`~tests.contract.fake_azureml.FakeAzureML` (one endpoint per list page, so ``nextLink``
is followed); :class:`LocalDriver` runs ``LocalPlatform`` for real on Azurite, with one tiny
training started when the driver is made; :class:`FakeDriver` runs the tests' own
``FakePlatform``, so the fake the unit and flow tests rely on keeps the same contract.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from shared.clients import Clients
from shared.finetune import SERVERLESS, Planner, bundled_base_model, bundled_component
from shared.platform.port import FinetunePlan, JobInfo, ModelVersionInfo, Platform
from shared.settings import Settings
from shared.storage import BlobRef
from tests.contract.fake_azureml import RG, WS, FakeAzureML
from tests.fakes.credential import FakeCredential
from tests.fakes.platform import FakePlatform
from tests.fixtures.azureml.rest import SUB
from tests.isolation import isolated_settings
from tests.polling import wait_until

T = TypeVar("T")

LINE = "contract"
SHA = hashlib.sha256(b"tuneloop contract suite").hexdigest()
# A tiny run: one epoch over a few short examples (the suite's wall time is mostly this).
TINY_RUN = {"num_train_epochs": 1, "max_seq_length": 64, "per_device_train_batch_size": 8}


def chat_rows(n: int, seed: int) -> bytes:
    """A small chat dataset (JSONL) the trainer accepts."""
    colors = ["red", "green", "blue", "yellow"]
    rows = []
    for i in range(n):
        color, times = colors[(i + seed) % len(colors)], 1 + (i * 7 + seed) % 3
        rows.append(json.dumps({"messages": [
            {"role": "user", "content": f"Say {color} {times} times."},
            {"role": "assistant", "content": " ".join([color] * times)},
        ]}))
    return ("\n".join(rows) + "\n").encode()


class Driver:
    """An adapter under test plus the hooks the port lacks; subclasses fill them in."""

    kind: str
    platform: Platform
    settings: Settings
    plan: FinetunePlan  # a planned run of this platform (submitted by the tests or the driver)
    instance_type: str
    compute: str
    timeout: float  # how long "eventually" may take
    every: float

    def finish(self, job_name: str) -> JobInfo:
        """Make the job finish (fake: complete it; local: wait for the training)."""
        raise NotImplementedError

    def creations(self, what: str, *names: str) -> Any:
        """A value that changes whenever the platform creates ``what`` (job, endpoint,
        deployment) named ``names`` anew; equal before and after an idempotent call."""
        raise NotImplementedError

    def missing_base_model(self) -> tuple[Platform, str]:
        """A platform and a base model name it does not have."""
        raise NotImplementedError

    def check_targeted(self, endpoint: str, deployment: str) -> None:
        """Adapter-specific evidence that the last scoring request targeted ``deployment``."""

    def eventually(self, check: Callable[[], T | None], what: str) -> T:
        """Call ``check`` until it returns something truthy (reads move the fakes on; the local
        platform settles in real time)."""
        return wait_until(check, timeout=self.timeout, what=f"{self.kind}: {what}",
                          every=self.every)

    overrides: dict[str, Any] | None = None  # --set values of the driver's plans

    def plan_for(
        self, seed: int, *, start_model: ModelVersionInfo | None = None, validation: bool = True
    ) -> FinetunePlan:
        """Another run of the line (data seeded by ``seed``), planned by this platform: from
        ``start_model`` when given, with ``validation_blob`` "" when ``validation`` is false;
        its data is where the platform reads it from (see :meth:`upload`)."""
        train, held = chat_rows(16, seed=seed), chat_rows(4, seed=seed + 1)
        plan = Planner(self.settings, self.platform).plan(
            line=LINE, dataset_sha256=hashlib.sha256(train + held).hexdigest(),
            cli_overrides=self.overrides, start_model=start_model,
        )
        if not validation:
            plan = dataclasses.replace(plan, validation_blob="")
        self.upload(plan, train, held if validation else None)
        return plan

    def upload(self, plan: FinetunePlan, train: bytes, validation: bytes | None) -> None:
        """Put the plan's data where its trainer reads it (in-process fakes read none)."""

    def finished_job(self) -> JobInfo:
        """The driver's run, submitted through the port (once) and finished."""
        job = self.platform.submit_finetune(self.plan)
        return self.finish(job.name)

    def close(self) -> None:
        """Delete what the suite left behind and stop what the adapter started."""
        for endpoint in self.platform.list_endpoints():
            self.platform.delete_endpoint(endpoint.name)


class _InProcessDriver(Driver):
    """A driver over an in-process fake (workspace or platform) that records what it creates
    in ``created`` and completes a job when told."""

    fake: FakeAzureML | FakePlatform
    instance_type = "Standard_NC6s_v3"
    compute = "gpu-a100"

    def finish(self, job_name: str) -> JobInfo:
        self.fake.complete(job_name)
        return self.platform.get_job(job_name)

    def creations(self, what: str, *names: str) -> Any:
        return self.fake.created.count((what, *names))

    def missing_base_model(self) -> tuple[Platform, str]:
        return self.platform, "No-Such-Model-In-The-Registry"


class AzureMLDriver(_InProcessDriver):
    """``AzureMLPlatform`` through the real SDK and a stateful fake workspace."""

    kind = "azureml"
    timeout = 15.0
    every = 0.01

    def __init__(self) -> None:
        from shared.platform.azureml import AzureMLPlatform

        self.fake = FakeAzureML(page_size=1)  # every endpoint on its own page: nextLink in use
        self.settings = Settings(
            subscription_id=SUB, resource_group=RG, workspace_name=WS, platform="azureml",
            compute=self.compute, datastore="tuneloopprepared", prepared_container="prepared",
        )
        self.platform = AzureMLPlatform(
            self.settings, credential=FakeCredential(), transport=self.fake.transport
        )
        self.plan = Planner(self.settings, self.platform).plan(line=LINE, dataset_sha256=SHA)

    def check_targeted(self, endpoint: str, deployment: str) -> None:
        last = [s for s in self.fake.scores if s.endpoint == endpoint][-1]
        assert last.headers.get("azureml-model-deployment") == deployment
        assert last.deployment == deployment


class FakeDriver(_InProcessDriver):
    """The tests' ``FakePlatform`` with the bundled Phi-3 model and fine-tune component."""

    kind = "fake"
    timeout = 5.0
    every = 0.0

    def __init__(self) -> None:
        shipped = bundled_base_model()  # the registry's facts; its task tag as listed there
        model = dataclasses.replace(shipped, tags={**shipped.tags, "task": "chat-completion"})
        self.fake = FakePlatform(
            polls_to_provision=1, base_model=model, component=bundled_component()
        )
        self.platform = self.fake
        self.settings = Settings(platform="local", compute=self.compute)
        self.plan = Planner(self.settings, self.platform).plan(line=LINE, dataset_sha256=SHA)

    def check_targeted(self, endpoint: str, deployment: str) -> None:
        last = [i for i in self.fake.invocations if i[0] == endpoint][-1]
        assert last[1] == deployment


class LocalDriver(Driver):
    """``LocalPlatform`` for real: Azurite, a training subprocess, MLflow, endpoint servers."""

    kind = "local"
    instance_type = "local"
    compute = SERVERLESS
    timeout = 300.0
    every = 0.25
    overrides = TINY_RUN

    def __init__(self, azurite: str, root: Path) -> None:
        from shared.platform.local import LocalPlatform

        self.root = root
        self.settings = isolated_settings(azurite, root / "home")
        clients = self.clients = Clients(self.settings)
        clients.storage.ensure_containers(self.settings.prepared_container)
        self.platform = self.local = LocalPlatform.from_settings(
            self.settings, storage=clients.storage
        )
        train, validation = chat_rows(16, seed=1), chat_rows(4, seed=2)
        self.plan = Planner(self.settings, self.platform).plan(
            line=LINE, dataset_sha256=hashlib.sha256(train + validation).hexdigest(),
            cli_overrides=TINY_RUN,
        )
        container = self.plan.data_container
        clients.storage.write_bytes(BlobRef(container, self.plan.train_blob), train)
        clients.storage.write_bytes(BlobRef(container, self.plan.validation_blob), validation)
        # Training starts now and runs while the tests that need no model go first.
        self.platform.submit_finetune(self.plan)

    def upload(self, plan: FinetunePlan, train: bytes, validation: bytes | None) -> None:
        storage = self.clients.storage
        storage.write_bytes(BlobRef(plan.data_container, plan.train_blob), train)
        if validation is not None:
            storage.write_bytes(BlobRef(plan.data_container, plan.validation_blob), validation)

    def finish(self, job_name: str) -> JobInfo:
        def finished() -> JobInfo | None:
            job = self.platform.get_job(job_name)
            return job if job.terminal else None

        return self.eventually(finished, f"job {job_name} finished")

    def creations(self, what: str, *names: str) -> Any:
        paths = self.local.paths
        if what == "model":
            from shared.platform.local.registry import VERSION_TAG, client, quiet

            with quiet():
                found = client(self.local.home).search_model_versions(
                    f"name = '{names[0]}' and tags.{VERSION_TAG} = '{names[1]}'"
                )
            return len(found)  # MLflow versions registered as our name:version
        if what == "job":
            path = paths.job(names[0]) / "job.json"
        elif what == "endpoint":
            path = paths.endpoint(names[0]) / "endpoint.json"
        elif what == "deployment":
            path = paths.deployment(names[0], names[1])
        else:
            raise ValueError(f"no creation marker for {what}")
        record = json.loads(path.read_text()) if path.exists() else {}
        # created/submitted time and the process started for it identify one creation
        return (record.get("created") or record.get("submitted"), record.get("pid"))

    def missing_base_model(self) -> tuple[Platform, str]:
        from shared.platform.local import LocalPlatform

        missing = self.settings.model_copy(
            update={"local_base_model": str(self.root / "no-such-model")}
        )
        return LocalPlatform.from_settings(missing), "no-such-model"

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.local.close()
