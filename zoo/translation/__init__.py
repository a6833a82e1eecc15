"""Image-to-image networks: the PatchGAN discriminator (Pix2Pix, CycleGAN), U-Net and ResNet
generators, SRResNet, the CycleGAN history pool and the SR content loss. The trainers that
use them live in :mod:`zoo.trainers`; their shared task declaration is
:class:`zoo.trainers.translation_tasks.TranslatorTasks`."""
