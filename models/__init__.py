"""Quine models: the networks and their canonical weight order. Nothing about training."""

from models.config import ModelConfig
from models.quine import AuxiliaryQuine, VanillaQuine, build_quine

__all__ = ['ModelConfig', 'VanillaQuine', 'AuxiliaryQuine', 'build_quine']
