"""The RoPO adapter as a PEFT tuner. Importing it registers the ``ropo`` method with PEFT, so that
``peft.get_peft_model``, ``PeftModel.from_pretrained``, ``AutoPeftModelForCausalLM``,
transformers' ``load_adapter`` and TRL's ``peft_config=`` all know ``RoPOConfig``."""

from peft.mapping import PEFT_TYPE_TO_TUNER_MAPPING
from peft.utils import register_peft_method

from ropo.adapter.api import AutoRoPOModelForCausalLM, get_ropo_model
from ropo.adapter.config import PRESETS, RoPOConfig
from ropo.errors import RoPOConfigError, RoPOError, RoPOLoadError, RoPOMergeError, RoPOTargetError
from ropo.adapter.layer import RoPOLayer, RoPOLinear
from ropo.adapter.model import RoPOModel, merged_for_inference, orthogonality_error
from ropo.adapter.peft_type import ROPO_PEFT_TYPE

if ROPO_PEFT_TYPE not in PEFT_TYPE_TO_TUNER_MAPPING:  # importlib.reload must not register twice
    register_peft_method(name="ropo", config_cls=RoPOConfig, model_cls=RoPOModel)

__all__ = [
    "PRESETS",
    "AutoRoPOModelForCausalLM",
    "RoPOConfig",
    "RoPOConfigError",
    "RoPOError",
    "RoPOLayer",
    "RoPOLinear",
    "RoPOLoadError",
    "RoPOMergeError",
    "RoPOModel",
    "RoPOTargetError",
    "get_ropo_model",
    "merged_for_inference",
    "orthogonality_error",
]
