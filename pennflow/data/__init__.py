"""The data plane: data sources (manifests, downloads), data targets (publish), content keys."""
