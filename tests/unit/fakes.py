"""In-memory stand-ins for the API server, vCenter and the run, for the steps' unit tests
(test_steps.py): a step's do and undo see only what they would of a real cluster, and a test
scripts what the controllers do (a claim Bound, pods adopted) with hooks run by `wait`."""

from __future__ import annotations

import contextlib
import copy
import itertools
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from kubectl_csi_migrate.errors import ConflictError, NotFoundError, TemporaryError
from kubectl_csi_migrate.kube.cache import selector
from kubectl_csi_migrate.migration.context import Context, Settings
from kubectl_csi_migrate.migration.plan import Plan, VolumePlan
from kubectl_csi_migrate.migration.report import Timing
from kubectl_csi_migrate.migration.steps import Step
from kubectl_csi_migrate.migration.workdir import WorkDir

Obj = dict[str, Any]
Key = tuple[str, str | None, str]

CLUSTER_SCOPED = {"PersistentVolume", "VolumeAttachment", "CnsVSphereVolumeMigration", "StorageClass"}


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: a JSON merge patch (None removes a key)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


class FakeCache:
    """kube/cache.py's Cache as the steps use it: items(), stop(), wait_until()."""

    def __init__(self, kube: FakeKube, kind: str, namespace: str | None) -> None:
        self.kube, self.kind, self.namespace = kube, kind, namespace

    def items(self) -> list[Obj]:
        return self.kube.items(self.kind, self.namespace)

    def stop(self) -> None:
        pass

    def wait_until(
        self,
        predicate: Callable[[dict[str, Obj]], bool],
        what: str,
        timeout: float,
        select: Callable[[Obj], bool] | None = None,
        **_: Any,
    ) -> dict[str, Obj]:
        def chosen(objs: dict[str, Obj]) -> bool:
            return predicate({n: o for n, o in objs.items() if select is None or select(o)})

        seen = self.kube.watch_until(self.kind, chosen, what, timeout, namespace=self.namespace)
        return {n: o for n, o in seen.items() if select is None or select(o)}


class FakeKube:
    """Objects by (kind, namespace, name); the calls the step functions make of kube/client.Kube."""

    def __init__(self, *objs: Obj, resources: set[str] | None = None) -> None:
        self.objs: dict[Key, Obj] = {}
        self.resources = resources or set()
        self.server_date: str | None = "Sat, 05 Dec 2026 21:00:00 GMT"
        self.calls: list[tuple[str, str, str]] = []
        """(verb, kind, name) of every mutation that changed something, in order (a write refused,
        404 or 409, changed nothing)."""
        self.before_write: dict[tuple[str, str, str], Callable[[FakeKube], object]] = {}
        """(verb, kind, name) -> run once just before that write: another writer acting between
        the step's read and its write."""
        self.after_write: dict[tuple[str, str, str], Callable[[FakeKube], object]] = {}
        """(verb, kind, name) -> run once just after that write succeeded: another writer
        undoing it at once (a GitOps sync)."""
        self.controllers: list[Callable[[FakeKube], object]] = []
        """What the cluster's controllers do while a step waits (run by wait_until when the
        predicate does not hold yet)."""
        self._uids = itertools.count(1)
        for obj in objs:
            self.put(obj)

    # -- the test's own access ---------------------------------------------------------------

    def key(self, kind: str, name: str, namespace: str | None) -> Key:
        return (kind, None if kind in CLUSTER_SCOPED else (namespace or "ns"), name)

    def put(self, obj: Obj) -> Obj:
        meta = obj.setdefault("metadata", {})
        meta.setdefault("uid", f"uid-{next(self._uids)}")
        if obj["kind"] not in CLUSTER_SCOPED:
            meta.setdefault("namespace", "ns")
        self.objs[self.key(obj["kind"], meta["name"], meta.get("namespace"))] = obj
        return obj

    def obj(self, kind: str, name: str, namespace: str | None = None) -> Obj | None:
        return self.objs.get(self.key(kind, name, namespace))

    def mutations(self) -> list[tuple[str, str, str]]:
        return list(self.calls)

    def _writing(self, verb: str, kind: str, name: str) -> None:
        hook = self.before_write.pop((verb, kind, name), None)
        if hook is not None:
            hook(self)

    def _wrote(self, verb: str, kind: str, name: str) -> None:
        self.calls.append((verb, kind, name))
        hook = self.after_write.pop((verb, kind, name), None)
        if hook is not None:
            hook(self)

    # -- kube/client.Kube ----------------------------------------------------------------------

    def get(self, kind: str, name: str, namespace: str | None = None) -> Obj | None:
        return copy.deepcopy(self.obj(kind, name, namespace))

    def get_once(self, kind: str, name: str, namespace: str | None = None) -> Obj | None:
        return self.get(kind, name, namespace)

    def items(self, kind: str, namespace: str | None = None, label_selector: str | None = None) -> list[Obj]:
        chosen = selector(None, label_selector) or (lambda _o: True)
        return [
            copy.deepcopy(o)
            for (k, ns, _), o in sorted(self.objs.items(), key=lambda kv: str(kv[0]))
            if k == kind and (namespace is None or ns == namespace) and chosen(o)
        ]

    def items_once(self, kind: str, namespace: str | None = None) -> list[Obj]:
        return self.items(kind, namespace)

    def has_resource(self, kind: str) -> bool:
        return kind in self.resources

    def cache(self, kind: str, namespace: str | None = None) -> FakeCache:
        return FakeCache(self, kind, namespace)

    def create(self, obj: Obj) -> Obj:
        meta = obj["metadata"]
        self._writing("create", obj["kind"], meta["name"])
        if self.obj(obj["kind"], meta["name"], meta.get("namespace")) is not None:
            raise ConflictError(f"{obj['kind']} {meta['name']} already exists")
        new = copy.deepcopy(obj)
        new["metadata"].pop("uid", None)
        new["metadata"].pop("resourceVersion", None)
        new["metadata"]["generation"] = 1
        self._wrote("create", obj["kind"], meta["name"])
        return copy.deepcopy(self.put(new))

    def patch(self, kind: str, name: str, patch: Obj, namespace: str | None = None) -> Obj | None:
        self._writing("patch", kind, name)
        old = self.obj(kind, name, namespace)
        if old is None:
            raise NotFoundError(f"{kind} {name} not found")
        new = merge_patch(old, patch)
        if new.get("spec") != old.get("spec"):
            new["metadata"]["generation"] = int(old["metadata"].get("generation") or 0) + 1
        self.objs[self.key(kind, name, namespace)] = new
        if new != old:  # a patch that leaves the object as it was changes nothing
            self._wrote("patch", kind, name)
        return copy.deepcopy(new)

    def delete(
        self,
        kind: str,
        name: str,
        namespace: str | None = None,
        uid: str | None = None,
        propagation: str | None = None,
    ) -> None:
        self._writing("delete", kind, name)
        old = self.obj(kind, name, namespace)
        if old is None:
            raise NotFoundError(f"{kind} {name} not found")
        if uid and old["metadata"]["uid"] != uid:
            raise ConflictError(f"{kind} {name}: precondition failed: uid {uid}")
        del self.objs[self.key(kind, name, namespace)]
        self._wrote("delete", kind, name)
        if propagation == "Orphan":  # the garbage collector lets go of its dependents
            for o in self.objs.values():
                refs = o["metadata"].get("ownerReferences") or []
                if any(r.get("uid") == uid for r in refs):
                    o["metadata"]["ownerReferences"] = [r for r in refs if r.get("uid") != uid]

    def evict(self, name: str, namespace: str, uid: str | None = None) -> None:
        self.delete("Pod", name, namespace, uid=uid)
        self.calls[-1] = ("evict", "Pod", name)  # that delete succeeded

    def watch_until(
        self,
        kind: str,
        predicate: Callable[[dict[str, Obj]], bool],
        what: str,
        timeout: float,
        namespace: str | None = None,
        field_selector: str | None = None,
        label_selector: str | None = None,
        **_: Any,
    ) -> dict[str, Obj]:
        """The predicate over the objects selected as they are; when it does not hold, each
        controller acts once and it is looked at again; still not: the real wait's timeout."""
        chosen = selector(field_selector, label_selector) or (lambda _o: True)
        for controller in [None, *self.controllers]:
            if controller is not None:
                controller(self)
            objs = {o["metadata"]["name"]: o for o in self.items(kind, namespace) if chosen(o)}
            if predicate(objs):
                return objs
        raise TemporaryError(f"timed out after {timeout:.0f}s waiting for {what}")


class FakeVCenter:
    """vsphere/client.VCenter as disks.py uses it: one disk path -> FCD id registry."""

    def __init__(self) -> None:
        self.fcds: dict[str, str] = {}
        self.protected: set[str] = set()
        self.attached: dict[str, list[str]] = {}
        self.keeps_flag = True
        self.registered: list[str] = []

    def fcd_file_path(self, fcd_id: str, datastore_path: str, datacenter: str | None) -> str | None:
        return next((path for path, fcd in self.fcds.items() if fcd == fcd_id), None)

    def register_fcd(self, datastore_path: str, name: str, datacenter: str | None) -> str:
        if datastore_path not in self.fcds:
            self.fcds[datastore_path] = f"fcd-{len(self.fcds) + 1}"
            self.registered.append(datastore_path)
        return self.fcds[datastore_path]

    def protect_fcd(self, fcd_id: str, datastore_path: str, datacenter: str | None) -> bool:
        if self.keeps_flag:
            self.protected.add(fcd_id)
        return self.keeps_flag

    def attached_vms(self, datastore_path: str) -> list[str]:
        return self.attached.get(datastore_path, [])


class FakeContext:
    """The run as a step sees it (migration/context.Context), over a FakeKube and a FakeVCenter."""

    def __init__(self, kube: FakeKube, plan: Plan, workdir: WorkDir, vsphere: FakeVCenter | None = None) -> None:
        self.kube = kube
        self.plan = plan
        self.workdir = workdir
        self.settings = Settings(timeout=0.05, release_timeout=0.05)
        self.run_id = "run-1"
        self.done: dict[str, Obj] = {}
        self.caches: dict[tuple[str, str | None], Any] = {
            ("Pod", plan.namespace): kube.cache("Pod", plan.namespace),
            ("PersistentVolumeClaim", plan.namespace): kube.cache("PersistentVolumeClaim", plan.namespace),
        }
        self.pvs = kube.cache("PersistentVolume")
        self.live: Callable[[str], contextlib.AbstractContextManager[None]] | None = None
        self.stopping = threading.Event()
        self._timing = Timing()
        self._vsphere = vsphere or FakeVCenter()
        self.said: list[str] = []
        self.events: list[tuple[str, str, str]] = []
        self.waits: list[tuple[str, str]] = []

    @property
    def timing(self) -> Timing:
        return self._timing

    @property
    def vsphere(self) -> FakeVCenter:
        return self._vsphere

    def say(self, line: str) -> None:
        self.said.append(line)

    def volume(self, step: Step) -> VolumePlan:
        return next(v for v in self.plan.volumes if v.pv == step.pv)

    def wait(
        self,
        kind: str,
        predicate: Callable[[dict[str, Obj]], bool],
        what: str,
        timeout: float | None = None,
        **selectors: Any,
    ) -> dict[str, Obj]:
        self.waits.append((kind, what))
        return self.kube.watch_until(kind, predicate, what, timeout or self.settings.timeout, **selectors)

    def wait_gone(self, kind: str, name: str, uid: str | None, what: str, namespace: str | None = None) -> None:
        from kubectl_csi_migrate.kube import predicates as p

        predicate = p.gone(name, uid) if uid else p.gone(name)
        self.wait(kind, predicate, what, namespace=namespace, field_selector=f"metadata.name={name}")

    def sleep(self, seconds: float) -> None:
        pass

    def vcenter(self, call: Callable[[], Any]) -> Any:
        return call()

    def event(self, kind: str, api_version: str, obj: Obj, reason: str, message: str) -> None:
        self.events.append((kind, obj["metadata"]["name"], reason))

    def as_context(self) -> Context:
        return cast(Context, self)


def new_workdir(path: Path, plan: Plan) -> WorkDir:
    wd = WorkDir(path)
    wd.create(plan)
    return wd
