"""Serving for the zoo: TF Serving configs, a local TF-Serving-compatible REST server, clients.

- ``zoo.serving.config``: parse and validate ``models.config`` (a text-format
  ``ModelServerConfig``), the batching parameters file and the monitoring config;
  resolve base paths and model version policies as TF Serving does.
- ``zoo.serving.model_server``: ``ModelServer``, the config's models loaded per version
  policy, with version labels, status and metadata, as TF Serving serves them.
- ``zoo.serving.rest_format``: TF Serving's REST predict format (row and columnar
  requests, ``{"b64": ...}`` strings, dtype and shape checks, its error texts).
- ``zoo.serving.server``: ``make_server``, a local HTTP server that speaks TF Serving's
  REST API (``/v1/models/...``) over the same ``models.config``; ``main`` takes
  tensorflow_model_server-style flags.
- ``zoo.serving.client``: ``ServingClient`` (REST) and ``GrpcServingClient`` (gRPC).

The folder also holds ``models.config``, ``batching_parameters.txt``,
``monitoring.config``, a ``Dockerfile`` built on ``tensorflow/serving`` and a
``docker-compose.yml``. Importing this package imports nothing heavy.
"""
