"""ci-pipeline-exporter: GitHub Actions pipelines, build cache and images as Prometheus metrics."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ci-pipeline-exporter")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"
