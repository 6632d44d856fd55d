"""KubeFlower's built-in Flower App (ServerApp and ClientApp); the logic is in kubeflower_workload."""
