"""Trainers: one subclassed ``keras.Model`` per training style, owning ``train_step``."""

from zoo.trainers.adversarial import GAN
from zoo.trainers.autoencoder import Autoencoder, SequenceAutoencoder
from zoo.trainers.base import Trainer
from zoo.trainers.cyclegan import CycleGAN
from zoo.trainers.diffusion import DiffusionModel
from zoo.trainers.pix2pix import Pix2Pix
from zoo.trainers.super_resolution import SuperResolution
from zoo.trainers.vae import CVAE, VAE

__all__ = [
    "CVAE",
    "GAN",
    "VAE",
    "Autoencoder",
    "CycleGAN",
    "DiffusionModel",
    "Pix2Pix",
    "SequenceAutoencoder",
    "SuperResolution",
    "Trainer",
]
