"""Lowering: Keras -> TFLite (float32, int8) -> Apache TVM relax per target; ONNX in and out.

Heavy packages (TensorFlow, TVM, tf2onnx) are imported inside the functions that need them.
"""

from hgen.compiler.lowering.targets import TARGETS, TargetProfile, get_target
from hgen.compiler.lowering.tflite import TFLiteModel, lower_tflite, precision_of
from hgen.compiler.lowering.tvm_relax import TVMLibrary, compile_relax, export_library, lower_tvm, tflite_to_relax

__all__ = [
    "TARGETS",
    "TFLiteModel",
    "TVMLibrary",
    "TargetProfile",
    "compile_relax",
    "export_library",
    "get_target",
    "lower_tflite",
    "lower_tvm",
    "precision_of",
    "tflite_to_relax",
]
