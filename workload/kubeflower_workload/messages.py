"""Record names in the built-in app's messages, shared by its ServerApp and ClientApp."""

ARRAYS = "arrays"
CONFIG = "config"
METRICS = "metrics"
"""The keys of Flower's strategies (their defaults for arrayrecord_key and configrecord_key)."""
NUM_EXAMPLES = "num-examples"
"""The weight of a reply in aggregation (the strategies' weighted_by_key)."""
EVALUATE_RECEIVED = "evaluate-received"
"""Train-config flag: evaluate the received model before training it (fused rounds)."""
EVALUATION = "evaluation"
"""Reply record carrying that evaluation. A ConfigRecord, because a reply the strategy aggregates
must hold exactly one MetricRecord: the training metrics, weighted by training examples."""
