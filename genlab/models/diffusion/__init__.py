"""The diffusion family: the model (`model.py`), its U-Net (`unet.py`), noise schedules and samplers
(`schedule.py`), and the frozen prompt encoder with its caption templates (`text.py`)."""

from genlab.models.diffusion.model import Diffusion, DiffusionConfig, DiffusionEditOptions, DiffusionSampleOptions

__all__ = ["Diffusion", "DiffusionConfig", "DiffusionEditOptions", "DiffusionSampleOptions"]
