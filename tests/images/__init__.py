"""Tests of the real images in a real container engine (marker `images`).

`make test` builds both images first (scripts/images.sh) with the project's own Docker engine
(scripts/engine.sh) and exports its DOCKER_HOST. Without an engine the tests skip with the reason,
except where KUBEFLOWER_REQUIRE_IMAGES=1 (CI), where that is a failure.
"""
