"""The study service: specs, search spaces, storage, the Optuna bridge and the Ray runner."""
