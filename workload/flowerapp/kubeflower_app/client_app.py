"""The built-in ClientApp: see `kubeflower.workload.task`."""

from flwr.clientapp import ClientApp

from kubeflower.workload import task

app = ClientApp()
app.train()(task.train)
app.evaluate()(task.evaluate)
