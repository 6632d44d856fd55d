"""The built-in ClientApp: see `kubeflower_workload.task`."""

from flwr.clientapp import ClientApp

from kubeflower_workload import task

app = ClientApp()
app.train()(task.train)
app.evaluate()(task.evaluate)
