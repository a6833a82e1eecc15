"""Trainers: one subclassed ``keras.Model`` per training style, owning ``train_step``."""

from zoo.trainers.adversarial import GAN
from zoo.trainers.autoencoder import Autoencoder, SequenceAutoencoder
from zoo.trainers.base import Trainer
from zoo.trainers.diffusion import DiffusionModel
from zoo.trainers.vae import CVAE, VAE

__all__ = [
    "CVAE",
    "GAN",
    "VAE",
    "Autoencoder",
    "DiffusionModel",
    "SequenceAutoencoder",
    "Trainer",
]
