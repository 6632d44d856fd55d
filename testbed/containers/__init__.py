"""Pods as containers: the real images run in a real container engine (Docker), each pod of a
rendered job started as a kubelet would start it (`pods`), a job's federation on one container
network (`federation`), and the engine itself (`engine`). Used by tests/images."""
