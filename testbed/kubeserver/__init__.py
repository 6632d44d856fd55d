"""
An in-process Kubernetes API server for tests, good enough for kopf and kubectl.

Usage::

    from testbed.kubeserver import KubeServer

    with KubeServer() as kube:                      # a free port (host='127.0.0.1'), a background thread
        kube.url                                    # "http://127.0.0.1:PORT"
        kube.kubeconfig                             # a kubeconfig file pointing at it
        kube.kubectl('apply', '-f', path, '--validate=false')   # real kubectl; CompletedProcess
        kube.create(obj)                            # -> the stored object
        kube.get('apps/v1', 'deployments', 'default', 'x')      # -> dict | None
        kube.list('v1', 'pods', 'default', label_selector='app=x')
        kube.patch_status('apps/v1', 'deployments', 'default', 'x', {'readyReplicas': 1})
        kube.patch('v1', 'pods', 'default', 'x-0', {'metadata': {'finalizers': None}})  # not .status
        kube.delete('apps/v1', 'deployments', 'default', 'x')
        kube.requests.count('PATCH', '/federatedtrainingjobs/')  # HTTP requests received

The direct methods go through the same store as HTTP requests and emit the same watch
events, but are not HTTP requests themselves, so ``kube.requests`` counts only what
clients (the operator, kubectl) sent. API errors of direct methods raise
``kmock.KubernetesError`` (``status`` is the HTTP code); ``get`` returns None on 404.
If the server itself failed on a request (a 500: a bug here), leaving the ``with``
block raises, so that it is not mistaken for an operator bug.

Served built-in resources: v1 namespaces, pods, services, events, configmaps, secrets,
serviceaccounts, persistentvolumeclaims (stored only: no provisioner binds them); apps/v1
deployments, statefulsets, replicasets (status and scale); batch/v1 jobs; networking.k8s.io/v1
networkpolicies; events.k8s.io/v1 events; coordination.k8s.io/v1 leases; apiextensions.k8s.io/v1
customresourcedefinitions.

It extends kmock's ``KubernetesEmulator`` (pinned: ``kmock==0.8``, its internals are
used) with what a real API server does and kopf or kubectl rely on: server-set
metadata, a global resourceVersion with 409 conflicts, 422 on failed JSON-patch tests,
loss-free watches resumable from a resourceVersion, status and scale subresources,
generation, finalizers and deletionTimestamp, ownerReference garbage collection,
namespaces with their cleanup, label and field selectors, discovery that follows
CRDs, and server-side Table rendering with printer columns.

Modules, one concern each: ``paths`` (URL grammar), ``resources`` (built-ins, CRDs,
the registry), ``store`` (objects and write semantics), ``watch`` (event log),
``patching`` (merge, JSON and strategic merge patches), ``selectors``, ``jsonpath``,
``scale``, ``tables``, ``discovery``, ``errors``, ``requestlog``, ``server`` (HTTP,
on kmock) and ``runner`` (:class:`KubeServer`).

Where it differs from a real API server, knowingly:

* No admission, no RBAC, no authentication (any request is served), no OpenAPI
  (``kubectl apply``/``create -f`` need ``--validate=false``; ``kubectl explain`` fails),
  no server-side apply, no dry-run.
* Only JSON bodies: kubectl's typed-client subcommands that send protobuf
  (``kubectl create namespace|configmap|secret|deployment``, ``run``, ``expose``) are
  answered 415; use ``kubectl apply -f`` or ``kubectl create -f`` instead.
* No schema validation, pruning or defaulting of any object: validate custom
  resources against the CRD schema in the tests themselves (e.g. with jsonschema).
* No controllers: Deployments get no ReplicaSets or Pods, Pods never run, nothing
  sets a status unless the test does (``patch_status``). The only "controllers" are
  the garbage collector, the namespace cleanup and the CRD status (Established).
  With no kubelet, Pods are deleted at once, with no graceful termination.
* Garbage collection is background propagation done at once when the owner is
  removed; ``Foreground`` is treated as ``Background``; ``Orphan`` drops the owner
  references right away. An object written with owners that all no longer exist is
  deleted at once too (the real collector does so after checking they are gone).
* Strategic merge patches know the merge keys of common lists only (see ``patching``).
* Creating a namespaced object requires its namespace to exist (as with the real
  NamespaceLifecycle admission); only ``default`` exists at start.
* Deleting a CRD removes its objects at once, without waiting for their finalizers.
  CRD versions are served without conversion (as the ``None`` strategy does).
* Watches started without a resourceVersion (or with "0") first send the current
  objects as ADDED events, as a real server does; with ``resourceVersion=N`` they
  replay exactly the changes after N (410 Expired if too old). Bookmarks are only
  sent to end ``sendInitialEvents``. The column definitions of Table watch events
  are sent once per watch, as a real server does.
* List pagination (``limit``/``continue``) pages through the current state, not a
  snapshot. The core ``v1`` and ``events.k8s.io/v1`` events are separate stores.
* Built-in kinds are rendered in Tables as Name and Age only.
"""

from .requestlog import ApiRequest, RequestLog
from .runner import KubectlError, KubeServer

__all__ = ["ApiRequest", "KubeServer", "KubectlError", "RequestLog"]
