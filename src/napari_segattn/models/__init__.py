"""The model zoo: one registry (``build_model``), safetensors save/load, attention recorder."""

from .io import CheckpointError, load_model, read_checkpoint_config, save_model
from .recorder import ExposesAttention, record_attention
from .registry import build_model, count_parameters, get_spec, list_models, model_config

__all__ = [
    "build_model",
    "list_models",
    "get_spec",
    "model_config",
    "count_parameters",
    "save_model",
    "load_model",
    "read_checkpoint_config",
    "CheckpointError",
    "record_attention",
    "ExposesAttention",
]
