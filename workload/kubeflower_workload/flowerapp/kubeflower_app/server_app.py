"""The built-in ServerApp: see `kubeflower_workload.federation`."""

from flwr.serverapp import ServerApp

from kubeflower_workload.federation import main

app = ServerApp()
app.main()(main)
