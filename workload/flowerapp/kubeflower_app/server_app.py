"""The built-in ServerApp: see `kubeflower.workload.federation`."""

from flwr.serverapp import ServerApp

from kubeflower.workload.federation import main

app = ServerApp()
app.main()(main)
