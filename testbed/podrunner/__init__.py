"""
Pods as local processes: a one-node "cluster" for the API test server (``testbed.kubeserver``).

Usage::

    from testbed.kubeserver import KubeServer
    from testbed.podrunner import Network, PodRunner

    with Network() as net, KubeServer(host=net.gateway) as kube, PodRunner(kube, net) as runner:
        kube.kubectl('apply', '-f', 'deployment.yaml', '--validate=false')
        ...                                  # the Deployment gets a ReplicaSet, Pods, processes
        runner.container_pid('default', 'web-0')       # a running container's PID (to kill it)
        runner.processes('default', {'app': 'web'})    # live processes of matching pods, from /proc
        runner.errors                                  # what the runner could not do; [] when fine

What a node and its control plane would do, done here by one thread polling the test server
(``interval``, 0.2 s):

* ``pods``: the Deployment (through ReplicaSets: ``<deploy>-<hash>-<rand>``) and StatefulSet
  (``<sts>-<ordinal>``) controllers create and delete Pod objects in the test server (template
  labels, controller ownerReference, bound to the node) and write the workloads' status
  (replicas, readyReplicas, availableReplicas, updatedReplicas ...) from the pods' status.
* ``kubelet``: each Pod gets a sandbox -- its own network namespace and address (``netns``), its
  own /etc/hosts, resolv.conf and hostname, its volumes as fresh host directories -- and each
  container runs through ``processes``/``sandbox`` with its command, args and environment exactly
  as the spec renders them (``podspec``: the image's ENTRYPOINT/CMD/ENV from ``images``, the
  downward API, ``$(VAR)`` expansion), as PID 1 of its own PID namespace, as the pod's runAsUser,
  runAsGroup and fsGroup, with the volumes at their mountPaths, a read-only root file system,
  no_new_privs and no capabilities when the securityContext says so. Containers are restarted
  as restartPolicy says, with the kubelet's CrashLoopBackOff (immediately, then 10 s, 20 s ...);
  startup, readiness and liveness probes (httpGet, tcpSocket, grpc) run from the node to the pod's
  address; the Pod's status carries phase, conditions, podIP and per container ready, started,
  restartCount, state and lastState (terminated: exitCode, reason, signal). A deleted pod is
  stopped gracefully: SIGTERM, SIGKILL after terminationGracePeriodSeconds.
* ``services``: each Service gets a cluster IP, a user-space proxy listening there while it has
  ready endpoints (named targetPorts resolved in each pod) and relaying only what the endpoint's
  NetworkPolicies admit (``policies``), and its DNS names in every pod's /etc/hosts.

The operator under test runs as a pod too (tests/e2e installs it from deploy/), so it reaches a
job's server by the Service DNS name in its unchanged ``KUBEFLOWER_STATUS_URL``; the API test
server listens on the node's address on the bridge (``KubeServer(host=net.gateway)``).

Nothing is left behind: the ``with`` exit stops every process (SIGTERM, SIGKILL 2 s later) and
removes every namespace, veth, bridge, /etc/netns folder and directory of the run (mount points
missing on the machine are made inside the containers only, so none is ever added to it),
also when the test failed; each shim dies with the runner's thread (PR_SET_PDEATHSIG), and with
it its container's whole PID namespace, if pytest itself is killed; and ``Network()`` removes
what a killed earlier run left (names ``kfpr<id>``/``kfpr-<id>-...`` whose owner in
/run/kfpr/<id>.json is gone -- never anything else). ``atexit`` closes a runner left open.

Where it differs from a cluster, knowingly:

* One node, no scheduler: pods are bound at creation; nodeSelector is checked against the node's
  labels (hostname, os, arch) and an unmatched pod stays Pending/Unschedulable; affinity and
  tolerations are not evaluated. Resource requests and limits are not enforced (no cgroups);
  ``resourceFieldRef`` reads them, with the node's 2 CPUs / 8 GiB as the default.
* Images are the installation running the tests: an image name maps to the ENTRYPOINT, CMD,
  ENV, USER and users of its Dockerfile (``images``, mirroring Dockerfile.workload and
  Dockerfile.operator) over the machine's own file system; any other image waits with
  ErrImageNeverPull. The root file system is the machine's (read-only when asked); a non-root
  container sees /root as an empty tmpfs except the Python installation bound back into it
  (pyenv lives there), and /etc/passwd and /etc/group with the image's users added. A mount
  point the machine lacks (/var/lib/kubeflower/...) is made in a tmpfs laid over its parent
  in the container, with the parent's entries bound back into it.
* No cluster DNS: the Services' names (``<svc>.<ns>.svc.cluster.local``, ``<svc>.<ns>.svc``,
  ``<svc>.<ns>``, and ``<svc>`` in the same namespace) are in each pod's /etc/hosts; other names
  fail at once. Cluster IPs are written to ``spec.clusterIP`` just after creation (not by the
  API server on create, so a Service's generation is 2). kube-proxy is a user-space proxy: UDP,
  NodePorts, LoadBalancers, session affinity are not modelled; the backend pod sees the proxy's
  address as the client's. NetworkPolicies (ingress) are enforced by that proxy, so only for
  traffic through a Service, and a refused connection is reset rather than dropped (a timeout
  in a cluster). Pods have no route out of the pods' /24 (this machine has no network anyway).
* Deletion: the test server deletes objects at once, so the Pods made here carry a finalizer
  (``podrunner.test/kubelet``) that the kubelet removes once the containers have exited -- a
  deleted pod stays Terminating until then, and a StatefulSet reuses a name only after that.
  The grace period is the pod's ``terminationGracePeriodSeconds`` (default 30 s).
* No service-account token, no ``KUBERNETES_SERVICE_*`` variables, no Events from the kubelet
  or the controllers, no ControllerRevisions; Deployment RollingUpdate behaves as Recreate;
  StatefulSet updates are RollingUpdate one pod at a time (no partition, no maxUnavailable).
* Not modelled, and refused loudly (``Unsupported`` in ``runner.errors``): init and ephemeral
  containers, lifecycle hooks, exec probes, subPath, volumes other than emptyDir,
  persistentVolumeClaim, configMap, secret, projected (of secrets and configMaps) and hostPath,
  privileged containers, added capabilities.
* A persistentVolumeClaim is a folder of the runner's per claim (``PodRunner.claim_folder``),
  made on first mount and kept until the runner closes: no provisioner, no binding, no access
  modes (every pod on this one node may mount it, read-write); the claim object must exist.
* seccomp profiles are not applied (this machine's kernel is gVisor's, which filters anyway).

Modules, one concern each: ``netns`` (bridge, namespaces, addresses, /etc/netns files, stale
runs), ``images``, ``podspec`` (command, environment, user, mounts: pure), ``sandbox`` (the shim
inside the namespaces), ``processes`` (a container's process, CrashLoopBackOff), ``probes``,
``labels``, ``policies``, ``services`` (cluster IPs, endpoints, hosts files, the proxy), ``kubelet``, ``pods``
(the controllers) and ``runner`` (:class:`PodRunner`).
"""

from testbed.podrunner.netns import Network, missing_requirements
from testbed.podrunner.runner import PodRunner

__all__ = ["Network", "PodRunner", "missing_requirements"]
