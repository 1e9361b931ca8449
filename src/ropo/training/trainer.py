"""TRL's DPOTrainer, taught two things about RoPO models.

1. The reference policy is the same model with its adapters disabled (no second copy), like
   TRL already does for PEFT models.
2. Checkpoints hold the adapter only (``save_pretrained``), and resuming loads it back.
"""

from __future__ import annotations

import os

import torch
from transformers.trainer import TRAINING_ARGS_NAME
from trl import DPOTrainer

from ropo.adapter import RoPOModel


class RoPODPOTrainer(DPOTrainer):
    """``DPOTrainer`` for RoPO, plain (``full``) and PEFT models alike."""

    def _ropo_model(self) -> RoPOModel | None:
        model = self.accelerator.unwrap_model(self.model)
        return model if isinstance(model, RoPOModel) else None

    def compute_ref_log_probs(self, model, inputs):
        ropo_model = self._ropo_model()
        if ropo_model is None:
            return super().compute_ref_log_probs(model, inputs)
        with ropo_model.disable_adapter():
            return super().compute_ref_log_probs(model, inputs)

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        ropo_model = self._ropo_model()
        if ropo_model is None:
            return super()._save(output_dir, state_dict)
        output_dir = output_dir or self.args.output_dir
        os.makedirs(output_dir, exist_ok=True)
        ropo_model.save_pretrained(output_dir)
        if self.processing_class is not None:
            self.processing_class.save_pretrained(output_dir)
        torch.save(self.args, os.path.join(output_dir, TRAINING_ARGS_NAME))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        ropo_model = self._ropo_model()
        if ropo_model is None:
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        ropo_model.load_adapter_weights(resume_from_checkpoint)
