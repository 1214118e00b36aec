"""Adapters to real deployments.

- :mod:`fedtune.deploy.records`: fedtune's client messages as Flower records;
- :mod:`fedtune.deploy.client_app`: a Flower ``ClientApp`` running fedtune's client procedure;
- :mod:`fedtune.deploy.grid_backend`: a backend that sends a round's tasks through a Flower ``Grid``;
- :mod:`fedtune.deploy.server_app`: a Flower ``ServerApp`` running fedtune's round loop;
- :mod:`fedtune.deploy.simulation`: ``backend = "flower"`` on this machine, through Flower's
  simulation runtime;
- :mod:`fedtune.deploy.project`: a Flower app project for an experiment (``flwr run``);
- :mod:`fedtune.deploy.cli`: ``fedtune flower ...``.

Flower is an optional dependency (``pip install "fedtune[flower]"``); nothing here is
imported unless a Flower backend or command is used.
"""
