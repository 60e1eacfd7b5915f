"""Federated learning on Flower: clients that share all of a model (FedAvg, FedProx), its trunk
(FedPer) or nothing (local only). Entry point: psx.federated.run.federated_fit; only
psx.federated.schema may be imported without the `federated` extra."""
